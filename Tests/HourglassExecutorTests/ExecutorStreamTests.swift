import Foundation
import HourglassExecutor
import HourglassProto
import HourglassRPC
import HourglassTestSupport
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The executor against a scripted coordinator, with a manual clock: the stream contract.
@Suite("executor stream", .timeLimit(.minutes(3)))
struct ExecutorStreamTests {
  struct Harness {
    let coordinator: FakeCoordinator
    let clock: ManualClock
    let executor: Executor<ManualClock>
    let scratch: ScratchDirectory
  }

  static func configuration(slots: Int, scratch: ScratchDirectory) -> ExecutorConfiguration {
    var configuration = ExecutorConfiguration.defaults
    configuration.executorID = "executor-test"
    configuration.slots = slots
    configuration.temporaryDirectory = scratch.path
    configuration.exec.killGrace = .seconds(2)
    configuration.drainGrace = .seconds(30)
    return configuration
  }

  /// Runs an executor for the body; cancels it afterwards (which kills anything still running).
  func withExecutor(slots: Int = 1, operators: [any Operator] = [], _ body: (Harness) async throws -> Void) async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let coordinator = FakeCoordinator()
    let clock = ManualClock()
    var logger = Logger(label: "executor-test")
    logger.logLevel = .critical
    var configuration = Self.configuration(slots: slots, scratch: scratch)
    configuration.operators += operators.map(\.name)
    let executor = Executor(configuration: configuration, transport: coordinator.transport, clock: clock, logger: logger, operators: operators)
    let running = Task { try await executor.run() }
    do {
      try await body(Harness(coordinator: coordinator, clock: clock, executor: executor, scratch: scratch))
    } catch {
      running.cancel()
      _ = await running.result
      throw error
    }
    running.cancel()
    _ = await running.result
  }

  static func lease(
    runID: String = "run-1", fence: UInt64 = 7, operator name: String = "exec", script: String = "", arguments: [String] = [],
    timeout: Duration? = nil, leaseDuration: Duration = .seconds(30), startAfter: Duration? = nil
  ) -> Hourglass_V1_CoordinatorMessage {
    .with {
      $0.lease = .with {
        $0.runID = runID
        $0.taskID = "task-1"
        $0.scheduledAt.seconds = 1_790_000_000
        $0.attempt = 1
        $0.fence = fence
        $0.leaseDuration.seconds = leaseDuration.components.seconds
        $0.operator = name
        $0.blob = Data(script.utf8)
        $0.blobSha256 = ExecOperator.digest(of: Array(script.utf8))
        $0.arguments = arguments
        if let timeout { $0.timeout.seconds = timeout.components.seconds }
        if let startAfter { $0.startAfter.seconds = startAfter.components.seconds }
      }
    }
  }

  /// `CancelRun` for the run `lease()` grants by default, as its owner's delete sends it.
  static let cancelRun1: Hourglass_V1_CoordinatorMessage = .with {
    $0.cancel = .with {
      $0.runID = "run-1"
      $0.fence = 7
      $0.reason = "deleted by its owner"
    }
  }

  static func pids(_ text: String) -> [pid_t] {
    text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { pid_t($0) }
  }

  @Test("registers with its id, operators and slots, then grants one credit per slot")
  func registers() async throws {
    try await withExecutor(slots: 3) { harness in
      let (_, register, credits) = try await harness.coordinator.accept()
      #expect(register.executorID == "executor-test")
      #expect(register.operators == ["exec", "noop"])
      #expect(register.slots == 3)
      #expect(!register.version.isEmpty)
      #expect(credits == 3)
    }
  }

  @Test("a noop lease is reported SUCCEEDED with its fence, then its slot is granted back")
  func noop() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      connection.send(Self.lease(fence: 42, operator: "noop"))
      let result = try await connection.receive()
      guard case .result(let body) = result.kind else { Issue.record("expected a RunResult, got \(result)"); return }
      #expect(body.runID == "run-1")
      #expect(body.fence == 42)
      #expect(body.outcome == .succeeded)
      #expect(body.hasStarted && body.hasFinished)
      let credit = try await connection.receive()
      #expect(credit.credit.credits == 1)
    }
  }

  @Test("heartbeats go out every interval with the slot counts; acks are answered to")
  func heartbeats() async throws {
    try await withExecutor(slots: 2) { harness in
      let (connection, _, _) = try await harness.coordinator.accept(heartbeatInterval: .seconds(5))
      harness.clock.advance(by: .seconds(5))
      let beat = try await connection.receive(skippingHeartbeats: false)
      guard case .heartbeat(let heartbeat) = beat.kind else { Issue.record("expected a Heartbeat, got \(beat)"); return }
      #expect(heartbeat.sequence == 1)
      #expect(heartbeat.freeSlots == 2)
      #expect(heartbeat.running == 0)
      #expect(abs(Double(heartbeat.executorTime.seconds) - Date().timeIntervalSince1970) < 60)
      connection.send(
        .with {
          $0.heartbeatAck = .with {
            $0.sequence = 1; $0.eligible = false; $0.measuredSkewMicros = 9_000_000
          }
        })
      harness.clock.advance(by: .seconds(5))
      let second = try await connection.receive(skippingHeartbeats: false)
      #expect(second.heartbeat.sequence == 2)
    }
  }

  @Test("the timeout kills the whole process group and reports TIMED_OUT")
  func timeout() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(Self.lease(script: "#!/bin/sh\nsleep 1000 &\necho \"$$ $!\" > \"$1\"\nwait\n", arguments: [fifo], timeout: .seconds(5)))
      let pids = Self.pids(await readFIFO(fifo))
      #expect(pids.count == 2)
      harness.clock.advance(by: .seconds(5))
      let result = try await connection.receive()
      #expect(result.result.outcome == .timedOut)
      #expect(result.result.fence == 7)
      for pid in pids { #expect(!isAlive(pid), "process \(pid) outlived the timeout") }
      #expect(try await connection.receive().credit.credits == 1)
    }
  }

  @Test("a lease granted ahead of its due time is held on the monotonic clock until then, and then runs")
  func leaseAheadIsHeldUntilDue() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      connection.send(Self.lease(operator: "noop", startAfter: .seconds(2)))
      // The hold is a sleeper due in 2 s (nothing else the executor arms is that close).
      await harness.clock.waitForSleeper(dueWithin: .seconds(2))
      harness.clock.advance(by: .milliseconds(1_900))
      // Still held: the same sleeper, now 100 ms away.
      await harness.clock.waitForSleeper(dueWithin: .milliseconds(100))
      harness.clock.advance(by: .milliseconds(100))
      let result = try await connection.receive()
      #expect(result.result.runID == "run-1")
      #expect(result.result.outcome == .succeeded)
      #expect(try await connection.receive().credit.credits == 1)
    }
  }

  @Test("the first heartbeat goes out as soon as the executor is registered, for its clock to be measured")
  func firstHeartbeatAtOnce() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let first = try await connection.receive(skippingHeartbeats: false)
      guard case .heartbeat(let heartbeat) = first.kind else {
        Issue.record("expected a heartbeat before any time passed, got \(first)")
        return
      }
      #expect(heartbeat.sequence == 1)
    }
  }

  @Test("a held run whose lease runs out in the same wake as its start never starts")
  func leaseExpiresWhileHeld() async throws {
    let counting = CountingOperator()
    try await withExecutor(operators: [counting]) { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      connection.send(Self.lease(operator: counting.name, leaseDuration: .seconds(1), startAfter: .seconds(2)))
      // The renewal is the earliest timer (a third of the lease); then expiry at 1 s, start at 2 s.
      await harness.clock.waitForSleeper(dueWithin: .seconds(1))
      harness.clock.advance(by: .seconds(3))
      #expect(try await connection.receive().renewal.fence == 7)
      // Self-fenced: no result, only the slot's credit back.
      #expect(try await connection.receive().credit.credits == 1)
      #expect(counting.calls == 0, "the operator was never asked to run it")
    }
  }

  @Test("a held run's timeout counts from its start, not from the lease's receipt")
  func timeoutCountsFromHeldStart() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(
        Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo], timeout: .seconds(3), startAfter: .seconds(2)))
      await harness.clock.waitForSleeper(dueWithin: .seconds(2))
      harness.clock.advance(by: .seconds(2))
      let pid = try #require(Self.pids(await readFIFO(fifo)).first)
      // 4 s after receipt: past a timeout counted from receipt, 2 s into the 3 the run has.
      harness.clock.advance(by: .seconds(2))
      await harness.clock.waitForSleeper(dueWithin: .seconds(1))
      #expect(isAlive(pid))
      harness.clock.advance(by: .seconds(1))
      let result = try await connection.receive()
      #expect(result.result.outcome == .timedOut)
      #expect(!isAlive(pid))
    }
  }

  @Test("a run cancelled while it is held for its due time never starts and is reported CANCELLED")
  func cancelWhileHeld() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let marker = harness.scratch.path + "/started"
      connection.send(Self.lease(script: "#!/bin/sh\ntouch \"$1\"\n", arguments: [marker], startAfter: .seconds(10)))
      await harness.clock.waitForSleeper(dueWithin: .seconds(10))
      connection.send(Self.cancelRun1)
      let result = try await connection.receive()
      #expect(result.result.outcome == .cancelled)
      #expect(result.result.error.contains("stopped before it started"))
      #expect(result.result.error.contains("deleted by its owner"))
      #expect(try await connection.receive().credit.credits == 1)
      // Its due time passes: it still never runs.
      harness.clock.advance(by: .seconds(10))
      #expect(!FileManager.default.fileExists(atPath: marker))
    }
  }

  @Test("CancelRun kills the run and reports CANCELLED")
  func cancel() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo]))
      let pid = try #require(Self.pids(await readFIFO(fifo)).first)
      connection.send(Self.cancelRun1)
      let result = try await connection.receive()
      #expect(result.result.outcome == .cancelled)
      #expect(result.result.error.contains("deleted by its owner"))
      #expect(!isAlive(pid))
      #expect(try await connection.receive().credit.credits == 1)
    }
  }

  @Test("a refused renewal kills the run and sends no result, only the credit back")
  func renewalRefused() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo], leaseDuration: .seconds(30)))
      let pid = try #require(Self.pids(await readFIFO(fifo)).first)
      harness.clock.advance(by: .seconds(10))
      let renewal = try await connection.receive()
      #expect(renewal.renewal.runID == "run-1")
      #expect(renewal.renewal.fence == 7)
      connection.send(
        .with {
          $0.renewalAck = .with {
            $0.runID = "run-1"; $0.fence = 7; $0.renewed = false
          }
        })
      let next = try await connection.receive()
      guard case .credit(let credit) = next.kind else { Issue.record("expected only a credit, got \(next)"); return }
      #expect(credit.credits == 1)
      #expect(!isAlive(pid))
    }
  }

  @Test("self-fencing: without acknowledged renewals the run is killed when the lease runs out, and no result is sent")
  func selfFencing() async throws {
    try await withExecutor { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo], leaseDuration: .seconds(30)))
      let pid = try #require(Self.pids(await readFIFO(fifo)).first)
      harness.clock.advance(by: .seconds(10))
      #expect(try await connection.receive().renewal.fence == 7)
      #expect(isAlive(pid), "the lease is still valid at 10 s")
      harness.clock.advance(by: .seconds(21))
      var next = try await connection.receive()
      while case .renewal = next.kind { next = try await connection.receive() }
      guard case .credit(let credit) = next.kind else { Issue.record("expected only a credit, got \(next)"); return }
      #expect(credit.credits == 1)
      #expect(!isAlive(pid))
    }
  }

  @Test("an acknowledged renewal extends the lease from when the renewal was sent")
  func renewalExtends() async throws {
    try await withExecutor(slots: 2) { harness in
      let (connection, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo], leaseDuration: .seconds(30)))
      _ = await readFIFO(fifo)
      harness.clock.advance(by: .seconds(10))
      #expect(try await connection.receive().renewal.fence == 7)
      connection.send(
        .with {
          $0.renewalAck = .with {
            $0.runID = "run-1"; $0.fence = 7; $0.renewed = true; $0.leaseDuration.seconds = 30
          }
        })
      // A noop run's result proves the acknowledgement was taken in (one stream, in order).
      connection.send(Self.lease(runID: "sync", fence: 1, operator: "noop"))
      #expect(try await connection.receive().result.runID == "sync")
      #expect(try await connection.receive().credit.credits == 1)
      // The lease now runs to 40 s; at 35 s the run is still ours to cancel and report.
      harness.clock.advance(by: .seconds(10))
      #expect(try await connection.receive().renewal.fence == 7)
      harness.clock.advance(by: .seconds(15))
      connection.send(
        .with {
          $0.cancel = .with {
            $0.runID = "run-1"; $0.fence = 7
          }
        })
      var next = try await connection.receive()
      while case .renewal = next.kind { next = try await connection.receive() }
      #expect(next.result.outcome == .cancelled)
    }
  }

  @Test("after the stream fails the executor reconnects, registers again and keeps renewing its run")
  func reconnects() async throws {
    try await withExecutor(slots: 2) { harness in
      let (first, _, _) = try await harness.coordinator.accept()
      let fifo = try harness.scratch.fifo("pids")
      first.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo]))
      let pid = try #require(Self.pids(await readFIFO(fifo)).first)
      first.fail()
      // The reconnection timer (backoff 100 ms less jitter) is the only one due that soon.
      await harness.clock.waitForSleeper(dueWithin: .milliseconds(100))
      harness.clock.advance(by: .seconds(1))
      let second = await harness.coordinator.nextConnection()
      #expect(try await second.receive().register.executorID == "executor-test")
      second.send(
        .with {
          $0.registered = .with {
            $0.coordinatorID = "fake-2"; $0.leaseDuration.seconds = 30
          }
        })
      let renewal = try await second.receive()
      #expect(renewal.renewal.runID == "run-1" && renewal.renewal.fence == 7)
      #expect(try await second.receive().credit.credits == 1, "one slot is free, one is busy")
      #expect(isAlive(pid))
      second.send(
        .with {
          $0.cancel = .with {
            $0.runID = "run-1"; $0.fence = 7
          }
        })
      #expect(try await second.receive().result.outcome == .cancelled)
    }
  }

  @Test("drain: Draining is sent, no credit follows, the running task finishes and the stream closes")
  func drain() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let coordinator = FakeCoordinator()
    var logger = Logger(label: "executor-test")
    logger.logLevel = .critical
    let executor = Executor(
      configuration: Self.configuration(slots: 1, scratch: scratch), transport: coordinator.transport, clock: ManualClock(), logger: logger)
    let running = Task { try await executor.run() }
    let (connection, _, _) = try await coordinator.accept()
    let pidsFIFO = try scratch.fifo("pids")
    let goFIFO = try scratch.fifo("go")
    connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nread line < \"$2\"\necho \"finishing $line\"\n", arguments: [pidsFIFO, goFIFO]))
    _ = await readFIFO(pidsFIFO)
    executor.drain()
    let draining = try await connection.receive()
    #expect(draining.draining.grace.seconds == 30)
    await writeFIFO(goFIFO, "now\n")
    let result = try await connection.receive()
    #expect(result.result.outcome == .succeeded)
    #expect(String(decoding: result.result.outputTail, as: UTF8.self) == "finishing now\n")
    connection.send(
      .with {
        $0.resultAck = .with {
          $0.runID = result.result.runID; $0.fence = result.result.fence; $0.recorded = true
        }
      })
    let after = try await connection.receiveOrEnd()
    #expect(after == nil, "after draining the executor grants no credit and closes the stream")
    try await running.value
  }

  @Test("drain: when the grace runs out the task is killed, reported FAILED, and the stream closes")
  func drainGraceRunsOut() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let coordinator = FakeCoordinator()
    let clock = ManualClock()
    var logger = Logger(label: "executor-test")
    logger.logLevel = .critical
    let executor = Executor(
      configuration: Self.configuration(slots: 1, scratch: scratch), transport: coordinator.transport, clock: clock, logger: logger)
    let running = Task { try await executor.run() }
    let (connection, _, _) = try await coordinator.accept()
    let fifo = try scratch.fifo("pids")
    connection.send(Self.lease(script: "#!/bin/sh\necho $$ > \"$1\"\nexec sleep 1000\n", arguments: [fifo], leaseDuration: .seconds(120)))
    let pid = try #require(Self.pids(await readFIFO(fifo)).first)
    executor.drain()
    #expect(try await connection.receive().draining.grace.seconds == 30)
    // The drain deadline was armed when Draining was sent; the lease (120 s) outlives it.
    clock.advance(by: .seconds(30))
    var next = try await connection.receive()
    while case .renewal = next.kind { next = try await connection.receive() }
    #expect(next.result.outcome == .failed)
    #expect(next.result.error.contains("drain grace"))
    #expect(!isAlive(pid))
    connection.send(
      .with {
        $0.resultAck = .with {
          $0.runID = next.result.runID; $0.fence = next.result.fence; $0.recorded = true
        }
      })
    #expect(try await connection.receiveOrEnd() == nil)
    try await running.value
  }
}

/// An operator that only counts how often it is asked to run something, and succeeds.
final class CountingOperator: Operator {
  private let count = Mutex(0)

  var name: String { "counting" }

  /// How many runs it was given.
  var calls: Int { count.withLock { $0 } }

  func run(_ request: RunRequest, cancellation: RunCancellation) async -> RunOutcome {
    count.withLock { $0 += 1 }
    return RunOutcome(status: .succeeded, started: Date(), finished: Date())
  }
}
