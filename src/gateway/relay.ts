/**
 * The readable end of a streamed answer's tap: it reads the upstream's body as it arrives and gives the
 * client what the tap makes of each piece, with the client's pace as backpressure (the source pauses while
 * the client is behind). A Readable fed from the source's `data` events rather than a Transform piped from
 * it: each event of a stream crosses one stream's machinery instead of two, which is most of what a tap adds
 * to a stream's CPU beyond the bytes' own system calls.
 *
 * @module
 */
import { Readable } from 'node:stream';

export abstract class Relay extends Readable {
  #source: Readable | undefined;
  /** The source ended or was given up: nothing more is read from it. */
  #over = false;

  /** Reads `source` through the tap; a source that fails ends the stream through {@link failed}. */
  relay(source: Readable): this {
    this.#source = source;
    source.on('data', (chunk: Buffer | string) => {
      if (!this.#over) this.piece(chunk);
    });
    source.once('end', () => {
      if (this.#over) return;
      this.#over = true;
      this.ended();
      this.push(null);
    });
    source.on('error', (error) => {
      if (!this.#over) this.failed(error);
    });
    return this;
  }

  /** Reads one piece of the source; what goes to the client goes through {@link give}. */
  protected abstract piece(chunk: Buffer | string): void;

  /** The source ended: gives what is left (and the error event, if the stream ends with one). */
  protected abstract ended(): void;

  /** The source failed (a reset, a timeout between events). */
  protected abstract failed(error: unknown): void;

  /** Passes `out` to the client; a client behind pauses the source until it reads again. */
  protected give(out: string | Buffer): void {
    if (!this.push(out)) this.#source?.pause();
  }

  /** Stops reading the source and ends the stream after `last` (an error event). */
  protected finish(last: string): void {
    if (this.#over || this.destroyed) return;
    this.#over = true;
    this.#source?.destroy();
    this.push(last);
    this.push(null);
  }

  override _read(): void {
    if (!this.#over) this.#source?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The client went away: the upstream's stream is not read any further.
    this.#over = true;
    this.#source?.destroy();
    callback(error);
  }
}
