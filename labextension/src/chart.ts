/**
 * The score progression as small SVG line charts: the total score of each iteration, then one
 * small chart per check of the ladder (passed, failed and skipped marked on each point). No
 * charting library: a run has a few dozen points at most.
 */
import { Iteration } from './api';
import { h } from './dom';

const SVG = 'http://www.w3.org/2000/svg';

export interface Point {
  n: number;
  value: number;
  state: 'pass' | 'fail' | 'skipped' | 'score';
}

interface Size {
  width: number;
  height: number;
  left: number;
}

const WIDE: Size = { width: 420, height: 170, left: 36 };
const SMALL: Size = { width: 200, height: 96, left: 28 };

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    el.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    el.textContent = text;
  }
  return el;
}

/** One line over iterations 1..n with a y axis from 0 to ``yMax``. */
export function lineChart(
  title: string,
  points: Point[],
  n: number,
  yMax: number,
  size: Size = WIDE
): HTMLElement {
  const { width, height, left } = size;
  const top = 10;
  const bottom = 22;
  const right = 10;
  const x = (i: number) => left + (n <= 1 ? 0.5 : (i - 1) / (n - 1)) * (width - left - right);
  const y = (v: number) => height - bottom - (v / yMax) * (height - top - bottom);
  const described = points
    .map(p => `iteration ${p.n}: ${p.state === 'skipped' ? 'skipped' : p.value.toFixed(3)}`)
    .join(', ');
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    class: 'ap-chart-svg',
    role: 'img',
    'aria-label': `${title}: ${described || 'no iteration yet'}`
  });
  for (const tick of [0, yMax / 2, yMax]) {
    root.append(
      svg('line', { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: 'ap-grid' }),
      svg(
        'text',
        { x: left - 5, y: y(tick) + 3, class: 'ap-axis', 'text-anchor': 'end' },
        String(+tick.toFixed(2))
      )
    );
  }
  for (let i = 1; i <= n; i++) {
    root.append(
      svg('text', { x: x(i), y: height - 6, class: 'ap-axis', 'text-anchor': 'middle' }, String(i))
    );
  }
  const measured = points.filter(p => p.state !== 'skipped');
  if (measured.length > 1) {
    const d = measured.map((p, j) => `${j ? 'L' : 'M'}${x(p.n)},${y(p.value)}`).join(' ');
    root.append(svg('path', { d, class: 'ap-line' }));
  }
  for (const p of points) {
    const dot = svg('circle', {
      cx: x(p.n),
      cy: y(p.value),
      r: 4,
      class: `ap-dot ap-dot-${p.state}`
    });
    const label = p.state === 'skipped' ? 'skipped (an earlier gate failed)' : p.value.toFixed(3);
    dot.append(svg('title', {}, `${title}, iteration ${p.n}: ${label}`));
    root.append(dot);
  }
  return h(
    'figure',
    { className: 'ap-chart', 'data-chart': title },
    h('figcaption', {}, title),
    root
  );
}

/** The checks of a run in ladder order, as first seen across its iterations. */
export function ladderOrder(iterations: Iteration[]): string[] {
  const names: string[] = [];
  for (const it of iterations) {
    for (const name of [...it.checks.map(c => c.check), ...it.skipped]) {
      if (!names.includes(name)) {
        names.push(name);
      }
    }
  }
  return names;
}

/** The total score chart and one small chart per check (scores 0–1). */
export function scoreCharts(iterations: Iteration[]): HTMLElement {
  const n = Math.max(1, ...iterations.map(it => it.n));
  const total: Point[] = iterations
    .filter(it => it.score !== null)
    .map(it => ({ n: it.n, value: it.score as number, state: 'score' }));
  const top = Math.max(1, Math.ceil(Math.max(0, ...total.map(p => p.value))));
  const perCheck = ladderOrder(iterations).map(name => {
    const points: Point[] = iterations.flatMap((it): Point[] => {
      const c = it.checks.find(x => x.check === name);
      if (c) {
        return [{ n: it.n, value: c.score, state: c.passed ? 'pass' : 'fail' }];
      }
      return it.skipped.includes(name) ? [{ n: it.n, value: 0, state: 'skipped' }] : [];
    });
    return lineChart(name, points, n, 1, SMALL);
  });
  return h(
    'div',
    { className: 'ap-charts' },
    lineChart('total score (gates passed + quality)', total, n, top),
    h(
      'div',
      { className: 'ap-checks-charts', role: 'group', 'aria-label': 'Score per check' },
      ...perCheck
    )
  );
}
