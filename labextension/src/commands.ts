/**
 * Menu and palette commands that switch the current notebook's kernel, with
 * progress and errors shown as JupyterLab notifications.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { IImages, IKernelInfo, ISwitchRequest, requestAPI } from './api';
import {
  buildChoices,
  choiceLabel,
  CPU,
  describeKernel,
  GPU,
  IChoice,
  shortImage
} from './choices';
import { field, option } from './dom';
import { KernelEnvironment } from './environment';
import { jobFraction, switchKernel } from './switching';

export namespace CommandIDs {
  export const switchVersion = 'tfenv:switch';
  export const useCpu = 'tfenv:use-cpu';
  export const useGpu = 'tfenv:use-gpu';
}

/** Register the commands; `activate` calls this, so it must stay quick. */
export function addCommands(
  commands: CommandRegistry,
  environment: KernelEnvironment,
  trans: TranslationBundle
): void {
  const ready = () => environment.info !== null && !environment.switching;
  environment.changed.connect(() => commands.notifyCommandChanged());

  commands.addCommand(CommandIDs.switchVersion, {
    label: trans.__('Switch TensorFlow Version…'),
    caption: trans.__(
      'Restart the kernel in another TensorFlow image or on another device'
    ),
    isEnabled: ready,
    execute: async () => {
      const info = environment.info;
      if (!info) {
        return;
      }
      const body = new SwitchDialogBody(info, trans);
      const result = await showDialog({
        title: trans.__('Switch TensorFlow Version'),
        body,
        buttons: [
          Dialog.cancelButton({ label: trans.__('Cancel') }),
          Dialog.okButton({ label: trans.__('Switch') })
        ],
        focusNodeSelector: 'select'
      });
      if (result.button.accept && result.value) {
        await runSwitch(environment, result.value, trans);
      }
    }
  });

  commands.addCommand(CommandIDs.useCpu, {
    label: trans.__('Run on CPU'),
    caption: trans.__('Restart the kernel without GPUs'),
    isEnabled: ready,
    isToggled: () => (environment.info?.gpus ?? CPU) === CPU,
    execute: () => runSwitch(environment, { gpus: CPU }, trans)
  });

  commands.addCommand(CommandIDs.useGpu, {
    label: trans.__('Run on GPU'),
    caption: trans.__('Restart the kernel with all GPUs of the engine'),
    isEnabled: ready,
    isToggled: () => (environment.info?.gpus ?? CPU) !== CPU,
    execute: () => runSwitch(environment, { gpus: GPU }, trans)
  });
}

/** Switch the current kernel, reporting progress in one notification. */
export async function runSwitch(
  environment: KernelEnvironment,
  request: ISwitchRequest,
  trans: TranslationBundle
): Promise<void> {
  const kernelId = environment.kernelId;
  const before = environment.info;
  if (!kernelId || !before) {
    return;
  }
  if (
    (request.image ?? before.image) === before.image &&
    (request.gpus ?? before.gpus) === before.gpus
  ) {
    Notification.info(trans.__('The kernel already runs %1.', before.image), {
      autoClose: 4000
    });
    return;
  }
  const target = shortImage(request.image ?? before.image);
  const id = Notification.emit(
    trans.__('Switching the kernel to %1…', target),
    'in-progress',
    { autoClose: false }
  );
  environment.switching = true;
  try {
    const after = await switchKernel(kernelId, request, job => {
      Notification.update({
        id,
        message: job.message || trans.__('Switching the kernel to %1…', target),
        type: 'in-progress',
        autoClose: false,
        progress: jobFraction(job) ?? undefined
      });
    });
    Notification.update({
      id,
      message: trans.__(
        'The kernel now runs %1.',
        describeKernel(after, trans)
      ),
      type: 'success',
      autoClose: 5000,
      progress: undefined
    });
  } catch (error) {
    const title = trans.__(
      'Switching to %1 failed; the kernel is unchanged.',
      target
    );
    const reason = String((error as Error).message ?? error);
    // Notifications are cut at 140 characters; the fix is usually at the end.
    Notification.update({
      id,
      message: `${title} ${reason}`,
      type: 'error',
      autoClose: false,
      progress: undefined,
      actions: [
        {
          label: trans.__('Details'),
          callback: () => {
            void showDialog({
              title,
              body: reason,
              buttons: [Dialog.okButton({ label: trans.__('OK') })]
            });
          }
        }
      ]
    });
  } finally {
    environment.switching = false;
    environment.refresh();
  }
}

/** The dialog's form: an image and a device; fills in as images load. */
class SwitchDialogBody
  extends Widget
  implements Dialog.IBodyWidget<ISwitchRequest>
{
  constructor(
    private readonly _kernel: IKernelInfo,
    private readonly _trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-tfenv-dialog');
    this._version.className = 'jp-tfenv-version jp-mod-styled';
    this._device.className = 'jp-tfenv-device jp-mod-styled';
    this._version.append(option(_kernel.image, shortImage(_kernel.image)));
    this._device.append(
      option(CPU, _trans.__('CPU')),
      option(GPU, _trans.__('GPU (all)'))
    );
    this._device.value = _kernel.gpus === CPU ? CPU : GPU;
    this._note.className = 'jp-tfenv-registry';
    this._note.textContent = _trans.__('Loading images…');
    this.node.append(
      field(_trans.__('Version'), this._version),
      field(_trans.__('Device'), this._device),
      this._note
    );
    void this._load();
  }

  getValue(): ISwitchRequest {
    return { image: this._version.value, gpus: this._device.value };
  }

  private async _load(): Promise<void> {
    try {
      this._fill(await requestAPI<IImages>('images?registry=0'));
      this._note.textContent = this._trans.__(
        'Asking the registry for more versions…'
      );
      const all = await requestAPI<IImages>('images');
      this._fill(all);
      this._note.textContent = all.registry?.error
        ? this._trans.__('Registry unavailable: %1', all.registry.error)
        : '';
    } catch (error) {
      this._note.textContent = String((error as Error).message ?? error);
    }
  }

  private _fill(images: IImages): void {
    const selected = this._version.value || this._kernel.image;
    const choices: IChoice[] = buildChoices(images, this._kernel);
    this._version.replaceChildren(
      ...choices.map(choice =>
        option(choice.image, choiceLabel(choice, this._trans))
      )
    );
    if (choices.some(choice => choice.image === selected)) {
      this._version.value = selected;
    }
  }

  private _version = document.createElement('select');
  private _device = document.createElement('select');
  private _note = document.createElement('div');
}
