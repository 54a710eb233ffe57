/**
 * The notebook switcher widget: the model the kernel opens over the widget
 * comm protocol (see jupyter_tfenv/widget.py), and its view.
 *
 * The kernel only tells the view which kernel it is; the view lists images,
 * switches and follows progress through the REST API, so it keeps working
 * while the kernel restarts and in containers without network.
 */
import { DOMWidgetModel, DOMWidgetView } from '@jupyter-widgets/base';
import { Kernel } from '@jupyterlab/services';

import { IImages, IKernelInfo, requestAPI, translation } from './api';
import {
  buildChoices,
  choiceLabel,
  CPU,
  describeKernel,
  GPU,
  IChoice
} from './choices';
import { element, field, option } from './dom';
import { getKernel, jobFraction, switchKernel } from './switching';

/** The widget module the kernel names in `_model_module`. */
export const MODULE_NAME = 'jupyter-tfenv';
/** The switcher model's protocol version; the kernel asks for `^1.0.0`. */
export const MODULE_VERSION = '1.0.0';

/** What the kernel reports about itself (jupyter_tfenv.widget.environment_facts). */
export class TfenvSwitcherModel extends DOMWidgetModel {
  defaults(): ReturnType<DOMWidgetModel['defaults']> {
    return {
      ...super.defaults(),
      _model_name: 'TfenvSwitcherModel',
      _model_module: MODULE_NAME,
      _model_module_version: MODULE_VERSION,
      _view_name: 'TfenvSwitcherView',
      _view_module: MODULE_NAME,
      _view_module_version: MODULE_VERSION,
      kernel_id: '',
      image: '',
      gpus: CPU,
      tensorflow_version: null,
      python_version: null,
      ipywidgets_version: null,
      kernel_package_version: null
    };
  }
}

/** Current environment, version and device choice, Switch, progress. */
export class TfenvSwitcherView extends DOMWidgetView {
  render(): void {
    super.render();
    const trans = translation();
    this.el.classList.add('jp-tfenv-switcher');

    this._current = element('div', 'jp-tfenv-current');
    this._current.textContent = trans.__('Looking up this kernel…');

    this._version = element('select', 'jp-tfenv-version jp-mod-styled');
    this._version.title = trans.__('TensorFlow image to switch to');
    this._device = element('select', 'jp-tfenv-device jp-mod-styled');
    this._device.title = trans.__('Run on CPU or GPU');
    this._device.append(
      option(CPU, trans.__('CPU')),
      option(GPU, trans.__('GPU (all)'))
    );
    this._button = element('button', 'jp-tfenv-switch');
    this._button.textContent = trans.__('Switch');
    this._button.addEventListener('click', () => void this._switch());
    this._version.addEventListener('change', () => this._updateControls());
    this._device.addEventListener('change', () => this._updateControls());

    const controls = element('div', 'jp-tfenv-controls');
    controls.append(
      field(trans.__('Version'), this._version),
      field(trans.__('Device'), this._device),
      this._button
    );

    this._progress = element('progress', 'jp-tfenv-progress');
    this._progress.hidden = true;
    this._message = element('div', 'jp-tfenv-message');
    this._registry = element('div', 'jp-tfenv-registry');

    const title = element('div', 'jp-tfenv-title');
    title.textContent = trans.__('TensorFlow environment');
    this.el.append(
      title,
      this._current,
      controls,
      this._registry,
      this._progress,
      this._message
    );
    this._updateControls();
    void this._load();
  }

  remove(): unknown {
    this._abort.abort();
    return super.remove();
  }

  /** The notebook's connection to the kernel, held by its widget manager. */
  private get _connection(): Kernel.IKernelConnection | null {
    const manager = this.model.widget_manager as unknown as {
      kernel?: Kernel.IKernelConnection | null;
    };
    return manager.kernel ?? null;
  }

  /** The kernel's id: from the provisioner, else from the notebook session. */
  private get _kernelId(): string {
    const fromKernel = this.model.get('kernel_id') as string;
    return fromKernel || this._connection?.id || '';
  }

  private async _load(): Promise<void> {
    const trans = translation();
    const signal = this._abort.signal;
    try {
      const kernel = await getKernel(this._kernelId, signal);
      if (!kernel) {
        this._showCurrent(null);
        return;
      }
      this._showCurrent(kernel);
      // Local images answer at once; the registry may take seconds.
      this._showChoices(
        await requestAPI<IImages>('images?registry=0', { signal })
      );
      this._registry.textContent = trans.__(
        'Asking the registry for more versions…'
      );
      const all = await requestAPI<IImages>('images', { signal });
      this._showChoices(all);
      this._registry.textContent = all.registry?.error
        ? trans.__('Registry unavailable: %1', all.registry.error)
        : '';
    } catch (error) {
      if (!signal.aborted) {
        this._say(String((error as Error).message ?? error), 'error');
      }
    }
  }

  private _showCurrent(kernel: IKernelInfo | null): void {
    const trans = translation();
    this._kernel = kernel;
    if (!kernel) {
      this._current.textContent = trans.__(
        'This kernel does not run in a jupyter-tfenv container, so it cannot be switched. Pick a "(Docker CPU)" or "(Docker GPU)" kernel.'
      );
      this._current.dataset.tfVersion = '';
      this._updateControls();
      return;
    }
    this._current.textContent = trans.__(
      'Running %1',
      describeKernel(kernel, trans)
    );
    this._current.title = kernel.image;
    this._current.dataset.tfVersion = kernel.tensorflow_version ?? '';
    this._current.dataset.image = kernel.image;
    this._device.value = kernel.gpus && kernel.gpus !== CPU ? GPU : CPU;
    const warning = this._widgetsWarning();
    if (warning) {
      this._say(warning, 'warning');
    }
    this._updateControls();
  }

  private _showChoices(images: IImages): void {
    const trans = translation();
    const selected = this._version.value || this._kernel?.image || '';
    this._choices = buildChoices(images, this._kernel);
    this._version.replaceChildren(
      ...this._choices.map(choice =>
        option(choice.image, choiceLabel(choice, trans))
      )
    );
    if (this._choices.some(choice => choice.image === selected)) {
      this._version.value = selected;
    }
    this._updateControls();
  }

  /** The image's ipywidgets cannot render in this JupyterLab (ipywidgets 8). */
  private _widgetsWarning(): string | null {
    const version = this.model.get('ipywidgets_version') as string | null;
    if (!version || version.split('.')[0] === '8') {
      return null;
    }
    return translation().__(
      "This image has ipywidgets %1: its other widgets won't render here. Run `pip install 'ipywidgets>=8'` in the image, or switch to a newer image.",
      version
    );
  }

  private _updateControls(): void {
    const trans = translation();
    const kernel = this._kernel;
    const choice = this._choice();
    const unchanged =
      !!kernel &&
      choice?.image === kernel.image &&
      (this._device.value === GPU) === (kernel.gpus !== CPU);
    this._version.disabled = this._busy || !kernel;
    this._device.disabled = this._busy || !kernel;
    this._button.disabled = this._busy || !kernel || !choice || unchanged;
    this._button.title = unchanged
      ? trans.__('The kernel already runs this image on this device.')
      : trans.__('Restart the kernel in the chosen image and device');
  }

  private _choice(): IChoice | undefined {
    return this._choices.find(choice => choice.image === this._version.value);
  }

  private async _switch(): Promise<void> {
    const trans = translation();
    const choice = this._choice();
    if (!choice || !this._kernel) {
      return;
    }
    const gpus = this._device.value;
    this._busy = true;
    this._updateControls();
    this._progress.hidden = false;
    this._progress.removeAttribute('value');
    this._say(trans.__('Switching to %1…', choice.image), 'info');
    try {
      const kernel = await switchKernel(
        this._kernelId,
        { image: choice.image, gpus },
        job => {
          const fraction = jobFraction(job);
          if (fraction === null) {
            this._progress.removeAttribute('value');
          } else {
            this._progress.value = fraction;
          }
          if (job.message) {
            this._say(job.message, 'info');
          }
        },
        this._abort.signal,
        this._connection
      );
      this._showCurrent(kernel);
      this._say(
        trans.__('Switched. The kernel restarted: run your cells again.'),
        'success'
      );
    } catch (error) {
      if (this._abort.signal.aborted) {
        return;
      }
      this._say(
        trans.__(
          'Switching failed, the kernel is unchanged: %1',
          String((error as Error).message ?? error)
        ),
        'error'
      );
    } finally {
      this._busy = false;
      this._progress.hidden = true;
      this._updateControls();
    }
  }

  private _say(text: string, kind: 'info' | 'success' | 'warning' | 'error') {
    this._message.textContent = text;
    this._message.dataset.kind = kind;
  }

  private _abort = new AbortController();
  private _kernel: IKernelInfo | null = null;
  private _choices: IChoice[] = [];
  private _busy = false;
  private _current!: HTMLDivElement;
  private _version!: HTMLSelectElement;
  private _device!: HTMLSelectElement;
  private _button!: HTMLButtonElement;
  private _progress!: HTMLProgressElement;
  private _message!: HTMLDivElement;
  private _registry!: HTMLDivElement;
}
