/**
 * The crontab as written (jobs/crontab): each task line's schedule, options
 * and the comment above it, and when a parsed schedule next matches. Read by
 * the console's Crontab page (docs/console.md, "Jobs, the crontab and
 * replays"); no AdminJS here, so tests can import it without loading AdminJS
 * before admin/environment.ts.
 */
import { fromRoot } from './paths.ts';

/** The file the worker runs (jobs/worker.ts). */
export const CRONTAB_PATH = fromRoot('jobs', 'crontab');

const MINUTE = 60_000;
/** Every schedule matches within a year, unless it names a day that does not exist (31 February). */
const SEARCH_MINUTES = 366 * 24 * 60;

/** The first minute strictly after `from` whose UTC fields the matcher accepts, or null within a year. */
export function nextRun(match: (digest: { min: number; hour: number; date: number; month: number; dow: number }) => boolean, from: Date): Date | null {
  let at = Math.floor(from.getTime() / MINUTE) * MINUTE + MINUTE;
  for (let i = 0; i < SEARCH_MINUTES; i++, at += MINUTE) {
    const t = new Date(at);
    if (match({ min: t.getUTCMinutes(), hour: t.getUTCHours(), date: t.getUTCDate(), month: t.getUTCMonth() + 1, dow: t.getUTCDay() })) return t;
  }
  return null;
}

/** The crontab's task lines with their schedule as written and the comment above each. */
export function crontabLines(text: string): Array<{ schedule: string; task: string; options: string; description: string }> {
  const lines: Array<{ schedule: string; task: string; options: string; description: string }> = [];
  let comments: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') {
      comments = [];
    } else if (line.startsWith('#')) {
      comments.push(line.replace(/^#\s?/, ''));
    } else {
      const fields = line.split(/\s+/);
      lines.push({ schedule: fields.slice(0, 5).join(' '), task: fields[5] ?? '', options: (fields[6] ?? '').replace(/^\?/, ''), description: comments.join(' ') });
      comments = [];
    }
  }
  return lines;
}
