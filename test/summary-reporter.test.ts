import { describe, expect, it, vi } from 'vitest';
import type { TestModule } from 'vitest/node';
import SummaryReporter from './summary-reporter.js';

/** The two things the reporter reads of a file: its state and its tests' states. */
const file = (state: string, tests: string[]) =>
  ({ state: () => state, children: { allTests: () => tests.map((s) => ({ result: () => ({ state: s }) }))[Symbol.iterator]() } }) as unknown as TestModule;

function line(modules: TestModule[], unhandled: unknown[] = []): string {
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  try {
    new SummaryReporter().onTestRunEnd(modules, unhandled);
    return String(log.mock.calls[0]![0]).trim();
  } finally {
    log.mockRestore();
  }
}

describe('the summary line', () => {
  it('counts tests by state, and a file that failed outside its tests (a beforeAll, or not loading) as a failure', () => {
    expect(line([file('passed', ['passed', 'passed', 'skipped'])])).toBe('2 passed, 0 failed, 1 skipped');
    expect(line([file('failed', ['passed', 'failed'])])).toBe('1 passed, 1 failed');
    // A beforeAll that threw: its tests are skipped and the file failed.
    expect(line([file('passed', ['passed']), file('failed', ['skipped', 'skipped'])])).toBe('1 passed, 1 failed, 2 skipped');
    expect(line([file('failed', [])])).toBe('0 passed, 1 failed');
    expect(line([file('passed', ['passed'])], [new Error('unhandled')])).toBe('1 passed, 1 failed');
  });
});
