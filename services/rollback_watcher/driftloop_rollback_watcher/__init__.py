"""The rollback-watcher: `predictions` against the live version's reference, from
`model.promoted` / `model.rolled_back` → `rollback.requested` when confidence or the
label-free accuracy estimate drops."""
