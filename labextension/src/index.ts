/**
 * The Autopilot tracking console: a left sidebar of every run and a main-area view per run.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { RunView } from './runview';
import { RunsPanel } from './sidebar';

const ICON = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M12 2 4 21l8-4.5 8 4.5z"/>
</svg>`;

export const autopilotIcon = new LabIcon({ name: 'autopilot-lab:icon', svgstr: ICON });

const COMMANDS = { openRun: 'autopilot:open-run', showRuns: 'autopilot:show-runs' };

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'autopilot-lab:console',
  description: 'The Autopilot tracking console: every run of the store, live.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<RunView>>({ namespace: 'autopilot-run' });

    app.commands.addCommand(COMMANDS.openRun, {
      label: args => `Open Autopilot run ${args.id ?? ''}`,
      execute: args => {
        const id = String(args.id);
        const open = tracker.find(w => w.content.runId === id);
        if (open) {
          app.shell.activateById(open.id);
          return open;
        }
        const widget = new MainAreaWidget({ content: new RunView(id) });
        widget.id = `autopilot-run-${id}`;
        widget.title.label = id;
        widget.title.icon = autopilotIcon;
        widget.title.closable = true;
        void tracker.add(widget);
        app.shell.add(widget, 'main');
        app.shell.activateById(widget.id);
        return widget;
      }
    });

    const panel = new RunsPanel(id => void app.commands.execute(COMMANDS.openRun, { id }));
    panel.id = 'autopilot-runs';
    panel.title.icon = autopilotIcon;
    panel.title.caption = 'Autopilot';
    app.shell.add(panel, 'left', { rank: 650 });

    app.commands.addCommand(COMMANDS.showRuns, {
      label: 'Show Autopilot runs',
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: COMMANDS.showRuns, category: 'Autopilot' });

    if (restorer) {
      restorer.add(panel, 'autopilot-runs');
      void restorer.restore(tracker, {
        command: COMMANDS.openRun,
        args: w => ({ id: w.content.runId }),
        name: w => w.content.runId
      });
    }
  }
};

export default plugin;
