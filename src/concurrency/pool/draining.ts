/**
 * Draining: the wait, bounded, for a closing pool to settle (every borrowed resource back, no creation or
 * validation under way) before it destroys what is left.
 *
 * @module
 */
import type { SetTimer } from '../../internal/clock.ts';

/**
 * A wait for `settled()` to hold, or `timeoutMs` to pass. The pool calls `check()` whenever what `settled`
 * reads may have changed (a release, a creation or a validation ending), so nothing polls.
 */
export class DrainWait {
  readonly #settled: () => boolean;
  #wake: (() => void) | undefined;

  constructor(settled: () => boolean) {
    this.#settled = settled;
  }

  /** Resolves once settled, or after `timeoutMs`; never rejects. */
  wait(timeoutMs: number, setTimer: SetTimer): Promise<void> {
    if (this.#settled()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const cancel = setTimer(
        timeoutMs,
        () => {
          this.#wake = undefined;
          resolve();
        },
        true,
      );
      this.#wake = () => {
        cancel();
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** Ends the wait when it is settled now. */
  check(): void {
    if (this.#wake !== undefined && this.#settled()) this.#wake();
  }
}
