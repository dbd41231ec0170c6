/**
 * The series guard: a bound on the label sets of one labelled metric, so a label fed by traffic (a route, a
 * tool name) cannot grow the registry without end.
 *
 * @module
 */

/** Children of a labelled metric, bounded by `max`; a label set past the bound is dropped and counted. */
export class SeriesGuard<C> {
  readonly #children = new Map<string, C>();
  readonly #max: number;
  readonly #create: (labels: string[]) => C;
  readonly #drop: () => void;

  /** `create` makes the child for a new label set; `drop` counts one refused. */
  constructor(max: number, create: (labels: string[]) => C, drop: () => void) {
    this.#max = max;
    this.#create = create;
    this.#drop = drop;
  }

  /** The child for `labels`; undefined (and counted) when it would be one label set too many. */
  get(labels: string[]): C | undefined {
    const key = labels.join('\u0000');
    let child = this.#children.get(key);
    if (child === undefined) {
      if (this.#children.size >= this.#max) {
        this.#drop();
        return undefined;
      }
      child = this.#create(labels);
      this.#children.set(key, child);
    }
    return child;
  }
}
