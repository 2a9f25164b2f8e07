import HeapModule
import HourglassCore

/// Runs waiting for their due time, and runs already due waiting for an executor.
///
/// A plain value: the dispatcher owns it. Each task is queued at most once (the store keeps one
/// pending run per task), so a run loaded from the store and the same run handed over by the
/// Schedule RPC never go out twice. Runs that are due together leave by priority, higher first.
struct DueQueue {
  /// A run to dispatch.
  struct Entry: Hashable, Sendable {
    var taskID: TaskID
    var scheduledMicros: Int64
    var dueMicros: Int64
    var priority: Int32
  }

  private struct ByDue: Comparable {
    var entry: Entry
    static func < (a: ByDue, b: ByDue) -> Bool {
      if a.entry.dueMicros != b.entry.dueMicros { return a.entry.dueMicros < b.entry.dueMicros }
      if a.entry.priority != b.entry.priority { return a.entry.priority > b.entry.priority }
      return a.entry.taskID < b.entry.taskID
    }
  }

  private struct ByPriority: Comparable {
    var entry: Entry
    static func < (a: ByPriority, b: ByPriority) -> Bool {
      if a.entry.priority != b.entry.priority { return a.entry.priority > b.entry.priority }
      if a.entry.dueMicros != b.entry.dueMicros { return a.entry.dueMicros < b.entry.dueMicros }
      return a.entry.taskID < b.entry.taskID
    }
  }

  private var waiting = Heap<ByDue>()
  private var ready = Heap<ByPriority>()
  private var queued: [TaskID: Int64] = [:]

  /// Runs queued in all (waiting and ready).
  var count: Int { queued.count }

  /// Runs due and waiting for an executor.
  var readyCount: Int { ready.count }

  /// Queues a run; false when the task already has a run queued.
  @discardableResult
  mutating func push(_ entry: Entry) -> Bool {
    guard queued[entry.taskID] == nil else { return false }
    queued[entry.taskID] = entry.scheduledMicros
    waiting.insert(ByDue(entry: entry))
    return true
  }

  /// Forgets a task's queued run (deleted task); the heap entry is skipped lazily.
  mutating func remove(_ taskID: TaskID) {
    queued[taskID] = nil
  }

  /// Forgets the queued runs of every task `shouldRemove` picks (partitions given up); heap
  /// entries are skipped lazily.
  mutating func remove(where shouldRemove: (TaskID) -> Bool) {
    queued = queued.filter { !shouldRemove($0.key) }
  }

  /// The earliest due time of a run not yet due, if any.
  var nextDueMicros: Int64? {
    mutating get {
      dropStaleWaiting()
      return waiting.min?.entry.dueMicros
    }
  }

  /// Moves every run due at `now` to the ready set.
  mutating func promote(now: Int64) {
    while let first = waiting.min, first.entry.dueMicros <= now {
      let entry = waiting.removeMin().entry
      if isLive(entry) { ready.insert(ByPriority(entry: entry)) }
    }
  }

  /// Takes the highest-priority ready run.
  mutating func popReady() -> Entry? {
    while let top = ready.popMin() {
      if isLive(top.entry) {
        queued[top.entry.taskID] = nil
        return top.entry
      }
    }
    return nil
  }

  /// Puts back a ready run that could not go out yet (no executor).
  mutating func returnReady(_ entry: Entry) {
    queued[entry.taskID] = entry.scheduledMicros
    ready.insert(ByPriority(entry: entry))
  }

  /// Whether `entry` is still queued (waiting or ready), as it was pushed.
  func isQueued(_ entry: Entry) -> Bool {
    isLive(entry)
  }

  private func isLive(_ entry: Entry) -> Bool {
    queued[entry.taskID] == entry.scheduledMicros
  }

  private mutating func dropStaleWaiting() {
    while let first = waiting.min, !isLive(first.entry) {
      _ = waiting.removeMin()
    }
  }
}
