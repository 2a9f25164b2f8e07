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

  /// Records through `store`, at most `maxBatch` results per transaction.
  init(store: any TaskStore, maxBatch: Int) {
    committer = GroupCommitter(maxBatchItems: maxBatch, maxConcurrentBatches: 1, closedError: TaskStoreError.closed) { items in
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
