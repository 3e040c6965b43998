/**
 * The "Autopilot" sidebar: every run of the store, newest first, filtered by status, objective
 * and text; polled while visible (an unchanged list costs a 304).
 */
import { Widget } from '@lumino/widgets';

import { ApiError, get, Run, RunPage } from './api';
import { elapsed, h, score, statusBadge, when } from './dom';

const PAGE = 50;
const POLL_MS = 4000;
const STATUSES = ['running', 'finished', 'stopped', 'failed', 'interrupted'];

export class RunsPanel extends Widget {
  private readonly list = h('ul', { className: 'ap-runs', 'aria-label': 'Runs' });
  private readonly footer = h('div', { className: 'ap-runs-footer', role: 'status' });
  private readonly status = h(
    'select',
    { 'aria-label': 'Filter by status', className: 'jp-mod-styled' },
    h('option', { value: '' }, 'any status'),
    ...STATUSES.map(s => h('option', { value: s }, s))
  );
  private readonly objective = h(
    'select',
    { 'aria-label': 'Filter by objective', className: 'jp-mod-styled' },
    h('option', { value: '' }, 'any objective'),
    h('option', { value: 'improve' }, 'improve'),
    h('option', { value: 'migrate' }, 'migrate')
  );
  private readonly search = h('input', {
    type: 'search',
    placeholder: 'Search runs',
    'aria-label': 'Search runs by id, model, data, reason',
    className: 'jp-mod-styled'
  });
  private limit = PAGE;
  private timer = 0;
  private typing = 0;

  constructor(private readonly open: (id: string) => void) {
    super();
    this.addClass('ap-sidebar');
    const refresh = h(
      'button',
      {
        className: 'jp-Button jp-mod-styled ap-refresh',
        title: 'Refresh the runs',
        onclick: () => void this.refresh()
      },
      'Refresh'
    );
    this.status.addEventListener('change', () => this.restart());
    this.objective.addEventListener('change', () => this.restart());
    this.search.addEventListener('input', () => {
      window.clearTimeout(this.typing);
      this.typing = window.setTimeout(() => this.restart(), 300);
    });
    this.node.append(
      h('header', { className: 'ap-sidebar-header' }, h('h2', {}, 'Autopilot runs'), refresh),
      h(
        'div',
        { className: 'ap-filters', role: 'search' },
        this.status,
        this.objective,
        this.search
      ),
      this.list,
      this.footer
    );
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      this.poll();
    }
  }

  protected onAfterShow(): void {
    this.poll();
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.timer);
  }

  private poll(): void {
    window.clearInterval(this.timer);
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
  }

  private restart(): void {
    this.limit = PAGE;
    void this.refresh();
  }

  /** Fetch the first ``limit`` runs that match the filters; re-render when they changed. */
  async refresh(): Promise<void> {
    const query = new URLSearchParams({ limit: String(this.limit) });
    for (const [key, value] of [
      ['status', this.status.value],
      ['objective', this.objective.value],
      ['text', this.search.value.trim()]
    ]) {
      if (value) {
        query.set(key, value);
      }
    }
    try {
      const { data, changed } = await get<RunPage>(`runs?${query}`);
      if (changed || data.runs.some(run => run.status === 'running')) {
        this.render(data); // a running run's elapsed time moves on
      }
    } catch (e) {
      this.footer.textContent = e instanceof ApiError ? e.message : `cannot reach the server: ${e}`;
    }
  }

  private render(page: RunPage): void {
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.runId;
    this.list.replaceChildren(...page.runs.map(run => this.row(run)));
    const more =
      page.next_offset !== null
        ? h(
            'button',
            {
              className: 'jp-Button jp-mod-styled',
              onclick: () => {
                this.limit += PAGE;
                void this.refresh();
              }
            },
            'Show more'
          )
        : null;
    this.footer.replaceChildren(
      page.runs.length
        ? `${page.runs.length} run${page.runs.length === 1 ? '' : 's'} from ${page.home}`
        : `No runs in ${page.home} match.`,
      more ?? ''
    );
    if (focused) {
      this.list.querySelector<HTMLElement>(`[data-run-id="${CSS.escape(focused)}"]`)?.focus();
    }
  }

  private row(run: Run): HTMLElement {
    const facts = [
      `${run.iterations_done}/${run.max_iters} iterations`,
      `best ${score(run.best_score)}`,
      when(run.started_at),
      elapsed(run.started_at, run.duration_s)
    ];
    const button = h(
      'button',
      {
        className: 'ap-run',
        'data-run-id': run.id,
        'aria-label': `Open run ${run.id}: ${run.status}, ${run.objective} ${run.model ?? ''}`,
        onclick: () => this.open(run.id)
      },
      h(
        'div',
        { className: 'ap-run-line' },
        statusBadge(run.status),
        h('span', { className: 'ap-run-model' }, run.model ?? '?'),
        h('span', { className: 'ap-run-objective' }, run.objective)
      ),
      h('div', { className: 'ap-run-facts' }, facts.join(' · ')),
      h('div', { className: 'ap-run-id' }, run.id)
    );
    return h('li', {}, button);
  }
}
