import HourglassStore
import Synchronization

/// Gathers run results from every executor stream into shared store transactions: each result
/// is still its own compare-and-set on the run's fence, but many are committed (and synced)
/// together, as ``GroupCommitter`` does for inserts.
final class ResultRecorder: Sendable {
  /// Where a result's outcome is left for its caller once its batch has committed.
  private final class Slot: Sendable {
    let outcome = Mutex<RecordOutcome?>(nil)
  }

  private struct Item: Sendable {
    var record: ResultRecord
    var slot: Slot
  }

  private let committer: GroupCommitter<Item>

  /// Records through `store`, at most `maxBatch` results per transaction, the transactions at
  /// least `spacingMicros` apart.
  ///
  /// The spacing keeps result commits from taking the store's single writer (SQLite) back to
  /// back: a lease transaction that arrives while a result commit is being synced waits for it,
  /// so the less of the time the writer spends on results, the less often a lease waits. A
  /// result's commit is late by at most the spacing; executors free a slot when a run finishes,
  /// not when its result is acknowledged, so dispatch does not wait for it. The pause is on the
  /// system clock, not the coordinator's injected one: it paces I/O and decides nothing.
  init(store: any TaskStore, maxBatch: Int, spacingMicros: Int64 = 0) {
    var pause: (@Sendable () async -> Void)? = nil
    if spacingMicros > 0 {
      pause = { @Sendable () async -> Void in _ = try? await Task.sleep(for: .microseconds(spacingMicros)) }
    }
    committer = GroupCommitter(
      maxBatchItems: maxBatch, maxConcurrentBatches: 1, closedError: TaskStoreError.closed, betweenBatches: pause
    ) { items in
      let outcomes = try await store.recordResults(items.map(\.record))
      for (item, outcome) in zip(items, outcomes) {
        item.slot.outcome.withLock { $0 = outcome }
      }
    }
  }

  /// Records one result; returns once the transaction holding it has committed.
  func record(_ record: ResultRecord) async throws -> RecordOutcome {
    let slot = Slot()
    try await committer.submit([Item(record: record, slot: slot)])
    return slot.outcome.withLock { $0 } ?? .staleFence
  }

  /// Records several results in one request (committed in the same transaction); returns
  /// their outcomes, in order, once it has committed.
  func record(_ records: [ResultRecord]) async throws -> [RecordOutcome] {
    if records.isEmpty { return [] }
    let items = records.map { Item(record: $0, slot: Slot()) }
    try await committer.submit(items)
    return items.map { $0.slot.outcome.withLock { $0 } ?? .staleFence }
  }
}
