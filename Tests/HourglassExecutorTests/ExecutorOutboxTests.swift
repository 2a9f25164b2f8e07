import HourglassProto
import Testing

@testable import HourglassExecutor

/// What an executor writes together: results and credits coalesced, nothing reordered across
/// other messages.
@Suite("executor outbox")
struct ExecutorOutboxTests {
  typealias Message = Hourglass_V1_ExecutorMessage

  static func result(_ runID: String, tail: Int = 0) -> Message {
    .with {
      $0.result = .with {
        $0.runID = runID; $0.outputTail = .init(repeating: 0x61, count: tail)
      }
    }
  }

  static func credit(_ n: UInt32) -> Message { .with { $0.credit = .with { $0.credits = n } } }
  static let renewal = Message.with { $0.renewal = .with { $0.runID = "r" } }

  @Test("results become one batch followed by one credit grant with the sum")
  func coalesces() {
    let out = ExecutorOutbox.coalesce([Self.result("a"), Self.credit(1), Self.result("b"), Self.credit(1)], batches: true)
    #expect(out.count == 2)
    #expect(out[0].results.results.map(\.runID) == ["a", "b"])
    #expect(out[1].credit.credits == 2)
  }

  @Test("without batches, results stay single messages; credits are still summed after them")
  func withoutBatches() {
    let out = ExecutorOutbox.coalesce([Self.result("a"), Self.credit(1), Self.result("b"), Self.credit(1)], batches: false)
    #expect(out.map(\.result.runID) == ["a", "b", ""])
    #expect(out[2].credit.credits == 2)
  }

  @Test("nothing moves across another kind of message")
  func keepsOrder() {
    let out = ExecutorOutbox.coalesce([Self.result("a"), Self.credit(1), Self.renewal, Self.result("b"), Self.credit(1)], batches: true)
    #expect(out.count == 5)
    #expect(out[0].result.runID == "a")
    #expect(out[1].credit.credits == 1)
    #expect(out[2].renewal.runID == "r")
    #expect(out[3].result.runID == "b")
  }

  @Test("a batch stays under the size bound: large output tails split it")
  func splitsLargeBatches() {
    let tail = ExecutorOutbox.batchBytes / 3
    let out = ExecutorOutbox.coalesce((0..<5).map { Self.result("r\($0)", tail: tail) }, batches: true)
    let runs = out.flatMap { message -> [String] in
      if case .results(let batch)? = message.kind { return batch.results.map(\.runID) }
      return [message.result.runID]
    }
    #expect(runs == ["r0", "r1", "r2", "r3", "r4"])
    #expect(out.count == 3)
  }

  @Test("the writer takes everything queued at once; finishing ends it after the queue")
  func takesAll() async {
    let outbox = ExecutorOutbox()
    outbox.allowBatches()
    outbox.yield(Self.result("a"))
    outbox.yield(Self.credit(1))
    outbox.yield(Self.result("b"))
    outbox.yield(Self.credit(1))
    outbox.finish()
    let first = await outbox.next()
    #expect(first?.count == 2)
    #expect(await outbox.next() == nil)
  }
}

/// The executor's deadline heap.
@Suite("executor timer queue")
struct TimerQueueTests {
  typealias Instant = ManualClock.Instant
  static func at(_ seconds: Int) -> Instant { Instant(offset: .seconds(seconds)) }
  static func key(_ id: String) -> RunKey { RunKey(runID: id, fence: 1) }

  @Test("due timers come out earliest first; re-armed and cancelled ones do not fire at their old deadline")
  func order() {
    var queue = TimerQueue<Instant>()
    queue.schedule(.renewal(Self.key("a")), at: Self.at(10))
    queue.schedule(.leaseExpiry(Self.key("a")), at: Self.at(30))
    queue.schedule(.heartbeat(0), at: Self.at(5))
    queue.schedule(.renewal(Self.key("b")), at: Self.at(3))
    queue.cancel(.renewal(Self.key("b")))
    queue.schedule(.heartbeat(0), at: Self.at(15))
    #expect(queue.nextDeadline() == Self.at(10))
    #expect(queue.popDue(now: Self.at(9)) == nil)
    var due: [ExecutorTimer] = []
    while let timer = queue.popDue(now: Self.at(20)) { due.append(timer) }
    #expect(due == [.renewal(Self.key("a")), .heartbeat(0)])
    #expect(queue.count == 1)
    #expect(queue.nextDeadline() == Self.at(30))
  }

  @Test("many runs that end early leave no growing heap behind")
  func compacts() {
    var queue = TimerQueue<Instant>()
    for n in 0..<10_000 {
      queue.schedule(.renewal(Self.key("\(n)")), at: Self.at(10 + n))
      queue.cancel(.renewal(Self.key("\(n)")))
    }
    queue.schedule(.heartbeat(0), at: Self.at(1))
    #expect(queue.count == 1)
    #expect(queue.popDue(now: Self.at(100_000)) == .heartbeat(0))
    #expect(queue.nextDeadline() == nil)
  }
}
