/**
 * The child side of {@link ChildNode} (test/helpers/child-node.ts): answers each IPC command with
 * `run(command)`'s result or error, and reports ready once listening. Call it after the fixture's setup.
 */
export function serve<Command extends { id: number; op: string }>(
  run: (command: Command) => Promise<unknown>,
): void {
  process.on('message', (command: Command) => {
    // Once closed, the process has nothing left to run and exits after the IPC channel goes.
    const done = () => {
      if (command.op === 'close') process.disconnect();
    };
    run(command).then(
      (result) => process.send?.({ id: command.id, ok: true, result }, done),
      (error: unknown) => process.send?.({ id: command.id, ok: false, error: String(error) }, done),
    );
  });
  process.send?.({ ready: true });
}
