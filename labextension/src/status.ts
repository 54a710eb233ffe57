/**
 * The status bar item: image, TensorFlow version and GPUs of the current
 * notebook's kernel; a click opens the switch dialog.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { describeKernel } from './choices';
import { KernelEnvironment } from './environment';

export class TfenvStatusItem extends Widget {
  constructor(
    private readonly _environment: KernelEnvironment,
    private readonly _trans: TranslationBundle,
    onClick: () => void
  ) {
    super();
    this.addClass('jp-tfenv-status');
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', onClick);
    _environment.changed.connect(this._update, this);
    this._update();
  }

  /** Shown only for notebooks on tfenv kernels. */
  get active(): boolean {
    return this._environment.info !== null;
  }

  private _update(): void {
    const info = this._environment.info;
    const trans = this._trans;
    if (!info) {
      this.node.textContent = '';
      this.node.title = '';
      return;
    }
    const text = describeKernel(info, trans);
    this.node.textContent = this._environment.switching
      ? trans.__('%1 (switching…)', text)
      : text;
    this.node.dataset.tfVersion = info.tensorflow_version ?? '';
    this.node.title = trans.__(
      'Image %1, GPUs %2, container %3. Click to switch.',
      info.image,
      info.gpus,
      (info.container_id ?? '').slice(0, 12)
    );
  }
}
