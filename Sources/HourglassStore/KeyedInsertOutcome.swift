import HourglassCore
import Synchronization

/// Where a backend's writer notes, while committing a batch, that a task with an idempotency key
/// was not inserted because its owner had already used the key, and which task the key stands
/// for. One per keyed task of an ``TaskStore/insert(_:)`` call; read by that call once its batch
/// has committed (a failed batch's notes are never read: the call throws instead).
package final class KeyedInsertOutcome: Sendable {
  private let standing = Mutex<TaskID?>(nil)

  /// A slot with nothing noted: the task stands for itself.
  package init() {}

  /// Notes that `id`, an earlier task with the same owner and key, stands for this one.
  package func noteExisting(_ id: TaskID) { standing.withLock { $0 = id } }

  /// Forgets what was noted: the batch's transaction is being tried again.
  package func clear() { standing.withLock { $0 = nil } }

  /// The earlier task that stands for this one, if the writer noted one.
  package var existing: TaskID? { standing.withLock { $0 } }
}
