/**
 * Small DOM helpers. Everything from the store goes in as text (never as HTML): candidate
 * code, hints and errors are data, not markup.
 */

type Child = Node | string | number | null | undefined | false;

/** An element with attributes (``on*`` functions become listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, unknown> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener);
    } else if (key === 'className') {
      el.className = String(value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(child instanceof Node ? child : String(child));
  }
}

/** A coloured status label (running, finished, stopped, failed, interrupted). */
export function statusBadge(status: string): HTMLElement {
  return h('span', { className: `ap-badge ap-status-${status}` }, status);
}

/** A hint priority label, P1 (blocks training) to P4 (style). */
export function priorityBadge(priority: string): HTMLElement {
  return h('span', { className: `ap-badge ap-priority ap-${priority.toLowerCase()}` }, priority);
}

export function score(value: number | null | undefined): string {
  return value === null || value === undefined ? '–' : value.toFixed(3);
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '–';
  }
  if (seconds < 59.95) {
    return `${seconds.toFixed(1)} s`;
  }
  // round to whole seconds first: 119.6 s is 2 min 0 s, never "1 min 60 s"
  const whole = Math.round(seconds);
  const m = Math.floor(whole / 60);
  if (m < 60) {
    return `${m} min ${whole % 60} s`;
  }
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** How long something took, or has been going on when it has not ended. */
export function elapsed(startedAt: string, seconds: number | null): string {
  return duration(seconds ?? Math.max(0, (Date.now() - Date.parse(startedAt)) / 1000));
}

export function when(iso: string | null): string {
  if (!iso) {
    return '–';
  }
  const d = new Date(iso);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit'
  })}`;
}

/** A value as short text: numbers rounded, objects as JSON. */
export function text(value: unknown): string {
  if (typeof value === 'number') {
    return Number.isInteger(value) ? String(value) : String(+value.toPrecision(4));
  }
  if (typeof value === 'string') {
    return value;
  }
  return JSON.stringify(value);
}

/** A labelled section with its heading. */
export function section(title: string, className: string, ...children: Child[]): HTMLElement {
  return h(
    'section',
    { className: `ap-section ${className}`, 'aria-label': title },
    h('h3', {}, title),
    ...children
  );
}
