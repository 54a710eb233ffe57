/**
 * The tfenv facts of the current notebook's kernel, kept fresh for the
 * status bar and the menu.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { IKernelInfo } from './api';
import { getKernel, kernelSwitched } from './switching';

export class KernelEnvironment {
  constructor(tracker: INotebookTracker) {
    tracker.currentChanged.connect(this._onCurrentChanged, this);
    // A switch from the notebook widget changes what the status bar must show.
    kernelSwitched.connect(this._onSwitched, this);
    this._onCurrentChanged(tracker, tracker.currentWidget);
  }

  /** Emitted whenever `info` or `switching` changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The current notebook's kernel id, when it has a kernel. */
  get kernelId(): string | null {
    return this._session?.session?.kernel?.id ?? null;
  }

  /** The kernel's tfenv facts; null when it is not a tfenv kernel. */
  get info(): IKernelInfo | null {
    return this._info;
  }

  /** A switch of this kernel is in progress (started from this page). */
  get switching(): boolean {
    return this._switching;
  }

  set switching(value: boolean) {
    this._switching = value;
    this._changed.emit();
  }

  /** Ask the server again; answers to older requests are dropped. */
  refresh(): void {
    const kernelId = this.kernelId;
    const request = ++this._request;
    if (!kernelId) {
      this._set(null);
      return;
    }
    getKernel(kernelId)
      .then(info => {
        if (request === this._request) {
          this._set(info);
        }
      })
      .catch(error => {
        console.warn(
          'jupyter-tfenv: cannot read the kernel environment',
          error
        );
        if (request === this._request) {
          this._set(null);
        }
      });
  }

  private _onCurrentChanged(
    _: INotebookTracker,
    panel: NotebookPanel | null
  ): void {
    if (this._session) {
      this._session.kernelChanged.disconnect(this._onKernelChanged, this);
      this._session.statusChanged.disconnect(this._onStatusChanged, this);
    }
    this._session = panel?.sessionContext ?? null;
    if (this._session) {
      this._session.kernelChanged.connect(this._onKernelChanged, this);
      this._session.statusChanged.connect(this._onStatusChanged, this);
    }
    this.refresh();
  }

  private _onSwitched(_: unknown, kernel: IKernelInfo): void {
    if (kernel.kernel_id === this.kernelId) {
      this._request++;
      this._set(kernel);
    }
  }

  private _onKernelChanged(): void {
    this.refresh();
  }

  /** After a (re)start the container and image may differ: look again once idle. */
  private _onStatusChanged(_: ISessionContext, status: Kernel.Status): void {
    if (status === 'starting' || status === 'restarting') {
      this._restarted = true;
    } else if (status === 'idle' && this._restarted) {
      this._restarted = false;
      this.refresh();
    }
  }

  private _set(info: IKernelInfo | null): void {
    this._info = info;
    this._changed.emit();
  }

  private _session: ISessionContext | null = null;
  private _info: IKernelInfo | null = null;
  private _switching = false;
  private _restarted = false;
  private _request = 0;
  private _changed = new Signal<this, void>(this);
}
