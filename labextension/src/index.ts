/**
 * jupyter-tfenv's JupyterLab front end: the notebook switcher widget, a
 * status bar item, and a TensorFlow menu for kernels in TensorFlow Docker
 * containers.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';

import { requestAPI, setTranslator } from './api';
import { addCommands, CommandIDs } from './commands';
import { KernelEnvironment } from './environment';
import { setConnectionFinder } from './switching';
import { TfenvStatusItem } from './status';

declare function require(path: string): { version: string };

// webpack inlines package.json, so this is the version of the built bundle.
const FRONTEND_VERSION = require('../package.json').version;
const TRANSLATION_DOMAIN = 'jupyter_tfenv';

/** Registers the switcher model and view with the notebook widget manager. */
const widgetPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:widget',
  description: 'The TensorFlow environment switcher widget for notebooks.',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  optional: [ITranslator],
  activate: (
    _: JupyterFrontEnd,
    registry: IJupyterWidgetRegistry,
    translator: ITranslator | null
  ) => {
    setTranslator(translator ?? nullTranslator);
    registry.registerWidget({
      name: 'jupyter-tfenv',
      version: '1.0.0',
      // Loaded on first use, so notebooks without the switcher pay nothing.
      exports: async () => {
        const { TfenvSwitcherModel, TfenvSwitcherView } =
          await import('./switcher');
        return { TfenvSwitcherModel, TfenvSwitcherView };
      }
    });
  }
};

/** Status bar item, TensorFlow menu commands, and the version check. */
const mainPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-tfenv:plugin',
  description:
    'Shows and switches the TensorFlow image of Docker kernels started by jupyter-tfenv.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load(TRANSLATION_DOMAIN);
    setTranslator(translator ?? nullTranslator);
    const environment = new KernelEnvironment(tracker);
    setConnectionFinder(kernelId => {
      const found: Kernel.IKernelConnection[] = [];
      tracker.forEach(panel => {
        const kernel = panel.sessionContext.session?.kernel;
        if (kernel && kernel.id === kernelId) {
          found.push(kernel);
        }
      });
      return found;
    });
    addCommands(app.commands, environment, trans);

    if (palette) {
      const category = trans.__('TensorFlow');
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category });
      }
    }

    if (statusBar) {
      const item = new TfenvStatusItem(environment, trans, () => {
        void app.commands.execute(CommandIDs.switchVersion);
      });
      statusBar.registerStatusItem('jupyter-tfenv:status', {
        item,
        align: 'left',
        rank: 4,
        isActive: () => item.active,
        activeStateChanged: environment.changed
      });
    }

    // Checked once the page is up: activate must not wait for the network.
    void app.restored.then(() => checkServerVersion(trans));
  }
};

/** Warn when the server extension is missing or from another release. */
async function checkServerVersion(
  trans: ReturnType<ITranslator['load']>
): Promise<void> {
  try {
    const { version } = await requestAPI<{ version: string }>('version');
    if (version !== FRONTEND_VERSION) {
      Notification.warning(
        trans.__(
          'jupyter-tfenv: the JupyterLab extension is version %1 but the server extension is %2. Reinstall jupyter-tfenv and restart Jupyter, then reload this page.',
          FRONTEND_VERSION,
          version
        ),
        { autoClose: false }
      );
    }
  } catch (error) {
    Notification.warning(
      trans.__(
        'jupyter-tfenv: cannot reach the server extension: %1',
        String((error as Error).message ?? error)
      ),
      { autoClose: false }
    );
  }
}

export default [widgetPlugin, mainPlugin];
