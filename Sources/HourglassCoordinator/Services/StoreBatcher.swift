import HourglassStore
import Synchronization

/// Gathers one kind of store write from every executor stream into shared store transactions,
/// as ``GroupCommitter`` does for inserts: run results (`TaskStore.recordResults`) and lease
/// renewals (`TaskStore.renewLeases`). Each item is still its own compare-and-set on its run's
/// fence; many are committed (and synced) together, and each caller gets its own item's answer.
final class StoreBatcher<Input: Sendable, Output: Sendable>: Sendable {
  /// Where an item's answer is left for its caller once its batch has committed.
  private final class Slot: Sendable {
    let output = Mutex<Output?>(nil)
  }

  private struct Item: Sendable {
    var input: Input
    var slot: Slot
  }

  private let committer: GroupCommitter<Item>
  private let unanswered: Output

  /// Writes through `write` (one store transaction for its whole array, one answer per input, in
  /// order), at most `maxBatch` items per transaction, the transactions at least `spacingMicros`
  /// apart. `unanswered` stands for an answer `write` did not give (it gives one per input).
  ///
  /// The spacing is for results: it keeps result commits from taking the store's single writer
  /// (SQLite) back to back. A lease transaction that arrives while a result commit is being
  /// synced waits for it, so the less of the time the writer spends on results, the less often
  /// a lease waits. A result's commit is late by at most the spacing; executors free a slot when
  /// a run finishes, not when its result is acknowledged, so dispatch does not wait for it. The
  /// pause is on the system clock, not the coordinator's injected one: it paces I/O and decides
  /// nothing.
  init(
    maxBatch: Int, spacingMicros: Int64 = 0, unanswered: Output,
    write: @escaping @Sendable ([Input]) async throws -> [Output]
  ) {
    var pause: (@Sendable () async -> Void)? = nil
    if spacingMicros > 0 {
      pause = { @Sendable () async -> Void in _ = try? await Task.sleep(for: .microseconds(spacingMicros)) }
    }
    self.unanswered = unanswered
    committer = GroupCommitter(
      maxBatchItems: maxBatch, maxConcurrentBatches: 1, closedError: TaskStoreError.closed, betweenBatches: pause
    ) { items in
      let outputs = try await write(items.map(\.input))
      for (item, output) in zip(items, outputs) {
        item.slot.output.withLock { $0 = output }
      }
    }
  }

  /// Writes one item; returns its answer once the transaction holding it has committed.
  func submit(_ input: Input) async throws -> Output {
    let slot = Slot()
    try await committer.submit([Item(input: input, slot: slot)])
    return slot.output.withLock { $0 } ?? unanswered
  }

  /// Writes several items in one request (committed in the same transaction); returns their
  /// answers, in order, once it has committed.
  func submit(_ inputs: [Input]) async throws -> [Output] {
    if inputs.isEmpty { return [] }
    let items = inputs.map { Item(input: $0, slot: Slot()) }
    try await committer.submit(items)
    return items.map { $0.slot.output.withLock { $0 } ?? unanswered }
  }
}
