/**
 * The readable end of a streamed answer's tap: it reads the upstream's body as it arrives and gives the
 * client what the tap makes of each piece, with the client's pace as backpressure (the source pauses while
 * the client is behind). Piped to the response, as the server pipes a streamed answer, it writes each piece
 * to the response itself; read otherwise, it is an ordinary Readable. Either way no Transform sits between
 * the upstream and the client: through one, each event crossed two more streams' machinery, most of what a
 * tap added to a stream's CPU beyond the bytes' own system calls.
 *
 * @module
 */
import { Readable, type Writable } from 'node:stream';

export abstract class Relay extends Readable {
  #source: Readable | undefined;
  /** The source ended or was given up: nothing more is read from it. */
  #over = false;
  #started = false;
  /** The response the relay writes to directly, once piped to one. */
  #to: Writable | undefined;
  readonly #resume = () => {
    if (!this.#over) this.#source?.resume();
  };

  /** Reads `source` through the tap; a source that fails ends the stream through {@link failed}. */
  relay(source: Readable): this {
    this.#source = source;
    source.once('end', () => {
      if (this.#over) return;
      this.#over = true;
      this.ended();
      this.#end();
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
    const to = this.#to;
    if (to === undefined) {
      if (!this.push(out)) this.#source?.pause();
    } else if (!to.write(out)) {
      this.#source?.pause();
      to.once('drain', this.#resume);
    }
  }

  /** Stops reading the source and ends the stream after `last` (an error event). */
  protected finish(last: string): void {
    if (this.#over || this.destroyed) return;
    this.#over = true;
    this.#source?.destroy();
    this.give(last);
    this.#end();
  }

  /**
   * Piped to a response (as the server does with a streamed answer), the relay writes each piece to it
   * directly instead of through its own buffer: one stream's machinery per event instead of two. It still
   * ends, fails and is destroyed as a Readable, which is what the server watches.
   */
  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (this.#to !== undefined || this.readableLength > 0 || options?.end === false) {
      return super.pipe(destination, options);
    }
    this.#to = destination as unknown as Writable;
    // Flowing with nothing in its buffer, it emits 'end' as soon as it is ended.
    this.resume();
    this.#start();
    return destination;
  }

  /** Ends the stream, and the response it writes to. */
  #end(): void {
    this.push(null);
    this.#to?.end();
  }

  /** Starts reading the source, once the client reads (or the relay is piped to it). */
  #start(): void {
    if (this.#started || this.#source === undefined) return;
    this.#started = true;
    this.#source.on('data', (chunk: Buffer | string) => {
      if (!this.#over) this.piece(chunk);
    });
  }

  override _read(): void {
    this.#start();
    if (!this.#over) this.#source?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // The client went away: the upstream's stream is not read any further.
    this.#over = true;
    this.#source?.destroy();
    callback(error);
  }
}
