"""The operator's levers on a running daemon: one controller, several interfaces.

- `commands`: the command words and their arguments (shared by every interface);
- `controller`: `Controller`, in the daemon: records each command in the store, runs it, answers;
- `client`: `bot ctl`'s side of the store channel (write the row, wait for the answer).

Imports nothing heavy: `bot ctl` and the daemon load only what they use.
"""
