/**
 * One run in the main area: its facts and controls, the score charts, the ladder of each
 * iteration, hints with the user's decisions, code diffs, sandbox outcomes, errors, LLM
 * exchanges and artifacts. Polled every two seconds while the run is running.
 */
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  apiUrl,
  Artifact,
  CheckResult,
  Code,
  Diff,
  Exchange,
  get,
  Iteration,
  post,
  RunDetail
} from './api';
import { ladderOrder, scoreCharts } from './chart';
import {
  append,
  duration,
  elapsed,
  h,
  priorityBadge,
  score,
  section,
  statusBadge,
  text,
  when
} from './dom';

const POLL_MS = 2000;
const WATCH_MS = 10000;

export class RunView extends Widget {
  private detail: RunDetail | null = null;
  private iterations: Iteration[] = [];
  private readonly head = h('div', { className: 'ap-head' });
  private readonly message = h('div', {
    className: 'ap-message',
    role: 'status',
    'aria-live': 'polite'
  });
  private readonly charts = section('Score progression', 'ap-charts-section');
  private readonly ladder = section('Ladder', 'ap-ladder');
  private readonly best = section('Best candidate', 'ap-best');
  private readonly bestCode = h('div', { className: 'ap-best-code' });
  private readonly hints = section('Hints by iteration', 'ap-hints');
  private readonly notes = section('Your notes', 'ap-notes');
  private readonly diff = section('Code diff', 'ap-diff');
  private readonly sandbox = section('Sandbox outcomes', 'ap-sandbox');
  private readonly errors = section('Errors', 'ap-errors');
  private readonly llm = section('LLM exchanges', 'ap-llm');
  private readonly artifacts = section('Artifacts', 'ap-artifacts');
  private readonly diffFrom = h('select', {
    'aria-label': 'Diff from iteration',
    className: 'jp-mod-styled'
  });
  private readonly diffTo = h('select', {
    'aria-label': 'Diff to iteration',
    className: 'jp-mod-styled'
  });
  private readonly diffOut = h('div', { className: 'ap-diff-out' });
  private timer = 0;
  private diffShown = false;
  private watchUntil = 0;
  /** The iteration whose code the "Best candidate" section shows. */
  private bestCodeOf: number | null = null;

  constructor(readonly runId: string) {
    super();
    this.addClass('ap-runview');
    this.node.tabIndex = -1;
    const show = h(
      'button',
      { className: 'jp-Button jp-mod-styled', onclick: () => void this.showDiff() },
      'Show diff'
    );
    append(
      this.diff,
      h(
        'div',
        { className: 'ap-diff-controls' },
        'from ',
        this.diffFrom,
        ' to ',
        this.diffTo,
        show
      ),
      this.diffOut
    );
    this.node.append(
      this.head,
      this.message,
      this.best,
      this.charts,
      this.ladder,
      this.hints,
      this.notes,
      this.diff,
      this.sandbox,
      this.errors,
      this.llm,
      this.artifacts
    );
  }

  protected onAfterAttach(): void {
    void this.refresh(true);
  }

  protected onBeforeDetach(): void {
    window.clearTimeout(this.timer);
  }

  /** Fetch the run; when it changed (or ``all``), fetch and render the rest. */
  async refresh(all = false): Promise<void> {
    try {
      const run = await get<RunDetail>(`runs/${this.runId}`);
      this.detail = run.data;
      const its = await get<{ iterations: Iteration[] }>(`runs/${this.runId}/iterations`);
      if (run.changed || its.changed || all) {
        this.iterations = its.data.iterations;
        this.render();
        await this.renderBestCode();
        await this.renderExtras(all);
        if (!this.diffShown && this.iterations.length > 1) {
          this.diffShown = true;
          await this.showDiff();
        }
      }
      this.schedule();
    } catch (e) {
      this.say(e instanceof ApiError ? e.message : `cannot reach the server: ${e}`, true);
    }
  }

  /** Poll again while the run is running, or just after a Stop or Resume took effect. */
  private schedule(): void {
    window.clearTimeout(this.timer);
    if (this.detail?.status === 'running' || Date.now() < this.watchUntil) {
      this.timer = window.setTimeout(() => void this.refresh(), POLL_MS);
    }
  }

  private say(message: string, error = false): void {
    this.message.textContent = message;
    this.message.classList.toggle('ap-error-text', error);
  }

  private render(): void {
    const run = this.detail as RunDetail;
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.focusKey;
    this.title.label = `${run.model ?? run.objective} · ${run.id}`;
    this.renderHead(run);
    this.renderBest(run);
    this.charts.replaceChildren(this.charts.firstChild as Node, scoreCharts(this.iterations));
    this.renderLadder();
    this.renderHints();
    this.renderNotes(run);
    this.renderDiffChoices();
    this.renderSandbox();
    this.renderErrors(run);
    if (focused) {
      this.node.querySelector<HTMLElement>(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
    }
  }

  private renderHead(run: RunDetail): void {
    // [label, text, tooltip]
    const facts: Array<[string, string, string?]> = [
      ['objective', run.objective],
      ['model', run.model ?? '–'],
      ['data', run.data ?? '–'],
      ['target', run.target ?? '–'],
      ['agent', run.agent],
      ...(run.notebook
        ? [['notebook', fileName(run.notebook), run.notebook] as [string, string, string]]
        : []),
      ['iterations', `${run.iterations_done} of ${run.max_iters}`],
      [
        'best',
        run.best_iteration ? `iteration ${run.best_iteration}, score ${score(run.best_score)}` : '–'
      ],
      ['started', when(run.started_at)],
      ['duration', elapsed(run.started_at, run.duration_s)],
      [
        'ended because',
        run.reason ?? run.error ?? (run.status === 'running' ? 'still running' : '–')
      ]
    ];
    const stop = h(
      'button',
      {
        className: 'jp-Button jp-mod-styled jp-mod-warn ap-stop',
        'data-focus-key': 'stop',
        disabled: !run.controls.stop,
        title: run.controls.note ?? 'Stop after the current iteration; the best so far is kept',
        onclick: () => void this.stop()
      },
      'Stop'
    );
    const upTo = h('input', {
      type: 'number',
      min: run.iterations_done + 1,
      value: Math.max(run.max_iters, run.iterations_done + 1),
      'aria-label': 'Resume up to this many iterations',
      className: 'jp-mod-styled ap-upto',
      disabled: !run.controls.resume
    });
    const resume = h(
      'button',
      {
        className: 'jp-Button jp-mod-styled jp-mod-accept ap-resume',
        'data-focus-key': 'resume',
        disabled: !run.controls.resume,
        title: run.controls.note ?? 'Continue from the last finished iteration, in this server',
        onclick: () => void this.resume(Number(upTo.value))
      },
      'Resume'
    );
    this.head.replaceChildren(
      h('h2', {}, statusBadge(run.status), ' ', run.id),
      h(
        'dl',
        { className: 'ap-facts' },
        ...facts.flatMap(([k, v, tip]) => [
          h('dt', {}, k),
          h('dd', { title: tip, 'data-fact': k }, v)
        ])
      ),
      h(
        'div',
        { className: 'ap-controls' },
        stop,
        resume,
        h('label', {}, 'up to ', upTo, ' iterations'),
        run.controls.where
          ? h(
              'span',
              { className: 'ap-where', title: run.controls.where },
              // a kernel id says nothing to a person; the notebook that owns the kernel does
              run.notebook && run.controls.where.startsWith('kernel ')
                ? `runs in notebook ${fileName(run.notebook)}`
                : `runs in ${run.controls.where}`
            )
          : null,
        run.controls.note ? h('span', { className: 'ap-where' }, run.controls.note) : null
      )
    );
  }

  private renderLadder(): void {
    const checks = ladderOrder(this.iterations);
    const run = this.detail as RunDetail;
    // an iteration still pending in a run that ended (interrupted, failed) is not going on:
    // it has neither "running…" nor a clock that counts
    const live = (it: Iteration) => it.status === 'pending' && run.status === 'running';
    const rows = this.iterations.map(it => {
      const cells = checks.map(name => {
        const c = it.checks.find(x => x.check === name);
        if (!c) {
          const label = it.skipped.includes(name) ? 'skipped' : live(it) ? '…' : '–';
          return h('td', { className: 'ap-cell-skipped' }, label);
        }
        const outcome = c.sandbox && c.sandbox.status !== 'ok' ? c.sandbox.status : null;
        return h(
          'td',
          {
            className: c.passed ? 'ap-cell-pass' : 'ap-cell-fail',
            title: describeCheck(c)
          },
          c.passed ? '✓ ' : '✗ ',
          score(c.score),
          outcome
            ? h('span', { className: `ap-badge ap-outcome ap-outcome-${outcome}` }, outcome)
            : null
        );
      });
      const best = it.status === 'finished' && it.n === run.best_iteration;
      const state = live(it)
        ? 'running…'
        : it.status === 'pending'
          ? 'not finished'
          : [best ? 'best' : '', it.targets_met ? 'targets met' : ''].filter(Boolean).join(' · ');
      return h(
        'tr',
        { className: best ? 'ap-row-best' : '', 'data-iteration': it.n },
        h('th', { scope: 'row' }, `${it.n}`),
        ...cells,
        h('td', { className: 'ap-num' }, score(it.score)),
        h('td', { className: 'ap-state' }, state),
        h(
          'td',
          { className: 'ap-num' },
          it.status === 'pending' && !live(it) ? '–' : elapsed(it.started_at, it.duration_s)
        )
      );
    });
    this.ladder.replaceChildren(
      this.ladder.firstChild as Node,
      rows.length
        ? h(
            'table',
            { className: 'ap-table' },
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                h('th', { scope: 'col' }, 'iteration'),
                ...checks.map(c => h('th', { scope: 'col' }, c)),
                h('th', { scope: 'col' }, 'score'),
                h('th', { scope: 'col' }, ''),
                h('th', { scope: 'col' }, 'time')
              )
            ),
            h('tbody', {}, ...rows)
          )
        : h('p', {}, 'No iteration yet.')
    );
  }

  private renderHints(): void {
    const groups = this.iterations
      .filter(it => it.hints.length)
      .map(it =>
        h(
          'div',
          { className: 'ap-hint-group' },
          h(
            'h4',
            {},
            `Iteration ${it.n}`,
            it.notes?.repair ? ` · after ${text(it.notes.repair)}` : '',
            it.n === this.detail?.best_iteration ? ' · best' : ''
          ),
          h('ul', { className: 'ap-hint-list' }, ...it.hints.map(hint => this.hintItem(it.n, hint)))
        )
      );
    this.hints.replaceChildren(
      this.hints.firstChild as Node,
      groups.length ? h('div', {}, ...groups) : h('p', {}, 'No hints: nothing is short.')
    );
  }

  private hintItem(n: number, hint: Iteration['hints'][number]): HTMLElement {
    const decide = (decision: 'accept' | 'reject') =>
      h(
        'button',
        {
          className: `jp-Button jp-mod-styled ap-decide ap-${decision}`,
          'aria-pressed': String(hint.decision === decision),
          'data-focus-key': `${decision}:${n}:${hint.key}`,
          title:
            decision === 'reject' ? 'A rejected hint reaches no agent again' : 'Keep this hint',
          onclick: () => void this.decide(n, hint.key, decision)
        },
        decision === 'accept' ? 'Accept' : 'Reject'
      );
    return h(
      'li',
      { className: `ap-hint ap-hint-${hint.priority.toLowerCase()}` },
      h(
        'div',
        { className: 'ap-hint-line' },
        priorityBadge(hint.priority),
        h('strong', {}, hint.kind),
        h(
          'span',
          { className: 'ap-muted' },
          `${hint.check} · ${hint.metric}${hint.where ? ` at ${hint.where}` : ''}`
        ),
        hint.decision
          ? h(
              'span',
              { className: `ap-badge ap-decision ap-decision-${hint.decision}` },
              `${hint.decision}ed`
            )
          : null
      ),
      hintValues(hint),
      h('div', { className: 'ap-suggestion' }, hint.suggestion),
      h('div', { className: 'ap-hint-actions' }, decide('accept'), decide('reject'))
    );
  }

  /** What the run hands back: the best iteration (the run's own choice, journal.rank's
   * order), its hints and its code. */
  private renderBest(run: RunDetail): void {
    const it = this.iterations.find(x => x.n === run.best_iteration && x.status === 'finished');
    if (!it) {
      this.best.replaceChildren(
        this.best.firstChild as Node,
        h('p', {}, 'No candidate has been scored yet.')
      );
      return;
    }
    this.best.replaceChildren(
      this.best.firstChild as Node,
      h(
        'p',
        { className: 'ap-best-line' },
        h('strong', {}, `Iteration ${it.n}`),
        `, score ${score(it.score)}`,
        it.targets_met ? ', targets met' : '',
        run.status === 'running' ? ' (so far)' : ''
      ),
      it.hints.length
        ? h(
            'ul',
            { className: 'ap-best-hints' },
            ...it.hints.map(hint =>
              h(
                'li',
                {},
                priorityBadge(hint.priority),
                ' ',
                h('strong', {}, hint.kind),
                ` ${hint.metric}: observed ${text(hint.observed)}, expected ${text(hint.expected)}`
              )
            )
          )
        : h('p', {}, 'No hints: nothing is short.'),
      this.bestCode
    );
  }

  /** The best iteration's code, fetched when the best changes. */
  private async renderBestCode(): Promise<void> {
    const n = this.detail?.best_iteration ?? null;
    const scored = this.iterations.some(x => x.n === n && x.status === 'finished');
    if (n === this.bestCodeOf || !scored) {
      return;
    }
    const { data } = await get<Code>(`runs/${this.runId}/iterations/${n}/code`);
    this.bestCodeOf = n;
    const names = Object.keys(data.files).sort((a, b) =>
      a === data.main ? -1 : b === data.main ? 1 : a.localeCompare(b)
    );
    this.bestCode.replaceChildren(
      ...names.map(name =>
        h(
          'details',
          // closed at first: the run's facts and charts stay in view; the main file first
          { className: 'ap-best-file', 'data-file': name },
          h('summary', {}, `${name} (iteration ${data.iteration})`),
          h('pre', {}, data.files[name])
        )
      )
    );
  }

  /** The user's own hints to the agent (the notebook panel's "Add hint"). */
  private renderNotes(run: RunDetail): void {
    this.notes.replaceChildren(
      this.notes.firstChild as Node,
      run.notes.length
        ? h(
            'ul',
            { className: 'ap-note-list' },
            ...run.notes.map(note =>
              h(
                'li',
                { className: 'ap-note' },
                h('span', { className: 'ap-muted' }, `after iteration ${note.iteration}: `),
                note.text
              )
            )
          )
        : h('p', {}, 'No notes. A hint of your own, added in the notebook panel, shows here.')
    );
  }

  private renderDiffChoices(): void {
    const ns = this.iterations.map(it => it.n);
    const keep = (select: HTMLSelectElement, fallback: number) => {
      const current = Number(select.value) || fallback;
      select.replaceChildren(...ns.map(n => h('option', { value: n }, `iteration ${n}`)));
      select.value = String(ns.includes(current) ? current : fallback);
    };
    const last = ns.length ? ns[ns.length - 1] : 1;
    keep(this.diffFrom, Math.max(1, last - 1));
    keep(this.diffTo, last);
  }

  private renderSandbox(): void {
    const rows = this.iterations.flatMap(it =>
      it.checks
        .filter(c => c.sandbox)
        .map(c => {
          const box = c.sandbox!;
          return h(
            'tr',
            { className: box.status === 'ok' ? '' : 'ap-row-bad' },
            h('td', {}, `${it.n}`),
            h('td', {}, c.check),
            h(
              'td',
              {},
              h('span', { className: `ap-badge ap-outcome ap-outcome-${box.status}` }, box.status)
            ),
            h('td', {}, box.limit ?? '–'),
            h('td', {}, box.exit_code ?? '–'),
            h('td', {}, box.signal ?? '–'),
            h('td', {}, box.error ? `${box.error.type ?? ''}: ${box.error.message ?? ''}` : '')
          );
        })
    );
    this.sandbox.replaceChildren(
      this.sandbox.firstChild as Node,
      rows.length
        ? h(
            'table',
            { className: 'ap-table' },
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ...['iteration', 'check', 'outcome', 'limit', 'exit code', 'signal', 'error'].map(
                  t => h('th', { scope: 'col' }, t)
                )
              )
            ),
            h('tbody', {}, ...rows)
          )
        : h('p', {}, 'Every sandboxed check ran to its end (no timeout, OOM or crash).')
    );
  }

  private renderErrors(run: RunDetail): void {
    this.errors.replaceChildren(
      this.errors.firstChild as Node,
      run.errors.length
        ? h(
            'ul',
            { className: 'ap-error-list' },
            ...run.errors.map(e =>
              h(
                'li',
                {},
                h('strong', {}, e.source),
                e.iteration ? ` (iteration ${e.iteration})` : '',
                h('pre', {}, e.message)
              )
            )
          )
        : h('p', {}, 'No errors.')
    );
  }

  /** LLM exchanges and artifacts change rarely: fetched with the rest, rendered on change. */
  private async renderExtras(force: boolean): Promise<void> {
    const [llm, arts] = await Promise.all([
      get<{ exchanges: Exchange[] }>(`runs/${this.runId}/llm`),
      get<{ artifacts: Artifact[] }>(`runs/${this.runId}/artifacts`)
    ]);
    if (llm.changed || force) {
      this.renderLlm(llm.data.exchanges);
    }
    if (arts.changed || force) {
      this.renderArtifacts(arts.data.artifacts);
    }
  }

  private renderLlm(exchanges: Exchange[]): void {
    const totals = (this.detail as RunDetail).llm;
    this.llm.replaceChildren(
      this.llm.firstChild as Node,
      exchanges.length
        ? h(
            'div',
            {},
            h(
              'p',
              {},
              `${totals.requests} requests, ${totals.failed} failed, ` +
                `${totals.prompt_tokens} + ${totals.completion_tokens} tokens ` +
                '(keys are never shown).'
            ),
            ...exchanges.map(x =>
              h(
                'details',
                { className: 'ap-exchange' },
                h(
                  'summary',
                  {},
                  [`iteration ${x.iteration} #${x.seq}`, x.model, x.status, duration(x.latency_s)]
                    .filter(part => part !== '–')
                    .join(' · ')
                ),
                x.error ? h('pre', { className: 'ap-error-text' }, x.error) : null,
                h('h5', {}, 'request'),
                h('pre', {}, JSON.stringify(x.request, null, 2)),
                h('h5', {}, 'response'),
                h('pre', {}, JSON.stringify(x.response, null, 2))
              )
            )
          )
        : h('p', {}, 'No LLM requests (the rules agent works offline).')
    );
  }

  private renderArtifacts(artifacts: Artifact[]): void {
    this.artifacts.replaceChildren(
      this.artifacts.firstChild as Node,
      artifacts.length
        ? h(
            'ul',
            { className: 'ap-artifact-list' },
            ...artifacts.map(a =>
              h(
                'li',
                {},
                h(
                  'a',
                  {
                    href: apiUrl(`runs/${this.runId}/artifacts/${encodePath(a.path)}`),
                    download: a.path.split('/').pop()
                  },
                  a.path
                ),
                h('span', { className: 'ap-muted' }, ` ${a.kind}, ${a.bytes} bytes`)
              )
            )
          )
        : h('p', {}, 'No artifacts yet.')
    );
  }

  private async showDiff(): Promise<void> {
    const a = this.diffFrom.value;
    const b = this.diffTo.value;
    try {
      const { data } = await get<Diff>(`runs/${this.runId}/diff?from=${a}&to=${b}`);
      const changes = [
        ...data.recipe.map(c => ['recipe', c] as const),
        ...data.init_kwargs.map(c => ['init', c] as const)
      ];
      this.diffOut.replaceChildren(
        changes.length
          ? h(
              'table',
              { className: 'ap-table' },
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  ...['', 'setting', `iteration ${a}`, `iteration ${b}`].map(t =>
                    h('th', { scope: 'col' }, t)
                  )
                )
              ),
              h(
                'tbody',
                {},
                ...changes.map(([where, c]) =>
                  h(
                    'tr',
                    {},
                    h('td', {}, where),
                    h('td', {}, c.key),
                    h('td', {}, text(c.from)),
                    h('td', {}, text(c.to))
                  )
                )
              )
            )
          : h('p', {}, 'Same recipe and constructor arguments.'),
        ...data.files.map(f =>
          h(
            'div',
            { className: 'ap-file-diff' },
            h('h4', {}, `${f.name} (${f.status})`),
            f.diff ? diffBlock(f.diff) : null
          )
        )
      );
    } catch (e) {
      this.say(e instanceof ApiError ? e.message : String(e), true);
    }
  }

  private async decide(n: number, key: string, decision: 'accept' | 'reject'): Promise<void> {
    try {
      await post(`runs/${this.runId}/decisions`, { iteration: n, hint_key: key, decision });
      this.say(`${decision}ed ${key}`);
      await this.refresh();
    } catch (e) {
      this.say(e instanceof ApiError ? e.message : String(e), true);
    }
  }

  private async stop(): Promise<void> {
    try {
      const r = await post<{ where: string; note: string }>(`runs/${this.runId}/stop`);
      this.say(`Stopping (in ${r.where}): ${r.note}.`);
      this.watchUntil = Date.now() + WATCH_MS;
      await this.refresh();
    } catch (e) {
      this.say(e instanceof ApiError ? e.message : String(e), true);
    }
  }

  private async resume(upTo: number): Promise<void> {
    try {
      await post(`runs/${this.runId}/resume`, Number.isFinite(upTo) ? { max_iters: upTo } : {});
      this.say('Resumed in this server.');
      this.watchUntil = Date.now() + WATCH_MS;
      await this.refresh();
    } catch (e) {
      this.say(e instanceof ApiError ? e.message : String(e), true);
    }
  }
}

/** A check's verdict in words (the ladder cell's tooltip). */
function describeCheck(c: CheckResult): string {
  const gate = c.hard ? ', gate' : '';
  const time = c.seconds !== null ? `, ${duration(c.seconds)}` : '';
  return `${c.check} (tier ${c.tier}${gate}): ${c.passed ? 'passed' : 'failed'}, score ${score(c.score)}${time}`;
}

/** A hint's observed and expected values side by side; a long value wraps in its column. */
function hintValues(hint: Iteration['hints'][number]): HTMLElement {
  const cell = (label: string, value: unknown) =>
    h(
      'div',
      { className: `ap-hint-value ap-${label}` },
      h('span', { className: 'ap-label' }, label),
      ' ',
      h('span', { className: 'ap-value' }, text(value))
    );
  return h(
    'div',
    { className: 'ap-hint-values' },
    cell('observed', hint.observed),
    cell('expected', hint.expected)
  );
}

/** The last segment of a path. */
function fileName(path: string): string {
  return path.split(/[\\/]/).pop() || path;
}

/** An artifact's path with each segment URL-encoded. */
function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** A unified diff with added and removed lines marked (by colour and by their sign). */
function diffBlock(diff: string): HTMLElement {
  const pre = h('pre', { className: 'ap-diff-text' });
  for (const line of diff.split('\n')) {
    const kind =
      line.startsWith('+++') || line.startsWith('---')
        ? 'file'
        : line.startsWith('+')
          ? 'add'
          : line.startsWith('-')
            ? 'del'
            : line.startsWith('@@')
              ? 'hunk'
              : 'ctx';
    pre.append(h('span', { className: `ap-diff-${kind}` }, line), '\n');
  }
  return pre;
}
