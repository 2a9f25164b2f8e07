/// The executor's armed timers, by deadline: what one sleeping task waits for, instead of a
/// task per timer.
///
/// Re-arming or cancelling a timer is O(1) (the old heap entry goes stale and is skipped when
/// it surfaces); taking what is due is O(log n) per entry. The heap is rebuilt without its stale
/// entries when they outnumber the live ones, so runs that end long before their renewal and
/// lease-expiry deadlines do not make it grow.
struct TimerQueue<Instant: InstantProtocol>: Sendable {
  private struct Entry: Sendable {
    var deadline: Instant
    var generation: UInt64
    var timer: ExecutorTimer
  }

  private var heap: [Entry] = []
  private var armed: [ExecutorTimer: UInt64] = [:]
  private var nextGeneration: UInt64 = 0

  /// Timers armed now.
  var count: Int { armed.count }

  /// Arms `timer` for `deadline`, replacing its previous deadline.
  mutating func schedule(_ timer: ExecutorTimer, at deadline: Instant) {
    nextGeneration += 1
    armed[timer] = nextGeneration
    push(Entry(deadline: deadline, generation: nextGeneration, timer: timer))
    if heap.count > 1024 && heap.count > 2 * armed.count { compact() }
  }

  /// Disarms `timer`, if armed.
  mutating func cancel(_ timer: ExecutorTimer) {
    armed[timer] = nil
  }

  /// Disarms every timer.
  mutating func removeAll() {
    heap = []
    armed = [:]
  }

  /// The earliest deadline of an armed timer.
  mutating func nextDeadline() -> Instant? {
    dropStaleTop()
    return heap.first?.deadline
  }

  /// Disarms and returns the armed timer with the earliest deadline, if that deadline is no
  /// later than `now`.
  mutating func popDue(now: Instant) -> ExecutorTimer? {
    dropStaleTop()
    guard let top = heap.first, top.deadline <= now else { return nil }
    popTop()
    armed[top.timer] = nil
    return top.timer
  }

  private func isLive(_ entry: Entry) -> Bool { armed[entry.timer] == entry.generation }

  private mutating func dropStaleTop() {
    while let top = heap.first, !isLive(top) { popTop() }
  }

  private mutating func compact() {
    let armed = self.armed
    heap.removeAll { armed[$0.timer] != $0.generation }
    guard heap.count > 1 else { return }
    for index in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(index) }
  }

  private mutating func push(_ entry: Entry) {
    heap.append(entry)
    var child = heap.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard heap[child].deadline < heap[parent].deadline else { break }
      heap.swapAt(child, parent)
      child = parent
    }
  }

  private mutating func popTop() {
    let last = heap.removeLast()
    guard !heap.isEmpty else { return }
    heap[0] = last
    siftDown(0)
  }

  private mutating func siftDown(_ start: Int) {
    var parent = start
    while true {
      let left = 2 * parent + 1
      guard left < heap.count else { return }
      var smallest = left
      if left + 1 < heap.count, heap[left + 1].deadline < heap[left].deadline { smallest = left + 1 }
      guard heap[smallest].deadline < heap[parent].deadline else { return }
      heap.swapAt(smallest, parent)
      parent = smallest
    }
  }
}
