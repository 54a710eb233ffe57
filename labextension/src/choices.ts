/**
 * What the switcher and the menu offer: the images to switch to, and how a
 * kernel's image and device are shown. Pure functions over REST answers.
 */
import { TranslationBundle } from '@jupyterlab/translation';

import { IImages, IKernelInfo } from './api';

/** One image the user can switch to. */
export interface IChoice {
  image: string;
  tensorflowVersion: string | null;
  /** Already on the engine; otherwise switching pulls it first. */
  local: boolean;
  /** A GPU build of TensorFlow (a `-gpu` image). */
  gpu: boolean;
}

/** The GPU settings the front ends offer: every GPU, or none. */
export const CPU = 'none';
export const GPU = 'all';

const VERSION_IN_TAG = /^(\d+\.\d+(?:\.\d+)?)/;

/** "2.20.0" of "2.20.0-gpu-jupyter"; null for tags such as "latest". */
export function versionOfTag(tag: string): string | null {
  const match = VERSION_IN_TAG.exec(tag);
  return match ? match[1] : null;
}

/** Newer versions first; images without a version last. */
export function compareVersions(a: string | null, b: string | null): number {
  if (a === b) {
    return 0;
  }
  if (a === null) {
    return 1;
  }
  if (b === null) {
    return -1;
  }
  const left = a.split('.').map(part => parseInt(part, 10) || 0);
  const right = b.split('.').map(part => parseInt(part, 10) || 0);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const diff = (right[i] ?? 0) - (left[i] ?? 0);
    if (diff !== 0) {
      return diff;
    }
  }
  return 0;
}

/**
 * Local images and registry tags as one list, newest TensorFlow first, each
 * image once; a registry tag that is already local counts as local. The
 * kernel's own image is always listed, so the list can start on it even when
 * the server does not count it as a TensorFlow image.
 */
export function buildChoices(
  images: IImages,
  current: IKernelInfo | null = null
): IChoice[] {
  const byImage = new Map<string, IChoice>();
  if (current) {
    byImage.set(current.image, {
      image: current.image,
      tensorflowVersion: current.tensorflow_version,
      local: true,
      gpu: false
    });
  }
  for (const image of images.local) {
    byImage.set(image.image, {
      image: image.image,
      tensorflowVersion: image.tensorflow_version,
      local: true,
      gpu: image.gpu
    });
  }
  const repository = images.registry?.repository;
  for (const tag of images.registry?.tags ?? []) {
    const name = `${repository}:${tag}`;
    if (!repository || byImage.has(name)) {
      continue;
    }
    byImage.set(name, {
      image: name,
      tensorflowVersion: versionOfTag(tag),
      local: false,
      gpu: tag.includes('gpu')
    });
  }
  return [...byImage.values()].sort(
    (a, b) =>
      compareVersions(a.tensorflowVersion, b.tensorflowVersion) ||
      Number(b.local) - Number(a.local) ||
      a.image.localeCompare(b.image)
  );
}

/** The image name without its registry and path: "tensorflow:2.21.0-jupyter". */
export function shortImage(image: string): string {
  const slash = image.lastIndexOf('/');
  return slash >= 0 ? image.slice(slash + 1) : image;
}

/** "CPU", "GPU (all)" or "GPU (device=0)", from a kernel's `gpus`. */
export function describeDevice(gpus: string, trans: TranslationBundle): string {
  if (!gpus || gpus === CPU || gpus === '0') {
    return trans.__('CPU');
  }
  return trans.__('GPU (%1)', gpus);
}

/** "TensorFlow 2.21.0", or a plain Python label for images without it. */
export function describeTensorFlow(
  version: string | null,
  trans: TranslationBundle
): string {
  return version
    ? trans.__('TensorFlow %1', version)
    : trans.__('Python without TensorFlow');
}

/** A choice as a menu or dropdown line. */
export function choiceLabel(choice: IChoice, trans: TranslationBundle): string {
  const name = describeTensorFlow(choice.tensorflowVersion, trans);
  const where = choice.local
    ? shortImage(choice.image)
    : trans.__('%1, to pull', choice.image);
  return `${name} · ${where}`;
}

/** One line saying what a kernel runs on, for the status bar and the widget. */
export function describeKernel(
  kernel: IKernelInfo,
  trans: TranslationBundle
): string {
  return [
    describeTensorFlow(kernel.tensorflow_version, trans),
    describeDevice(kernel.gpus, trans),
    shortImage(kernel.image)
  ].join(' · ');
}
