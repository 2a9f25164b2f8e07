import Dispatch
import Foundation
import HourglassExecutor
import HourglassProto
import HourglassTestSupport
import Logging
import MetricsTestKit
import Synchronization
import Testing

/// Log events kept for the test to wait on; one chosen message, when logged, holds the logging
/// thread until ``release()``. The executor's event loop logs its state machine's messages
/// itself, so holding one of them holds the loop: what the loop has not handled piles up.
final class HoldingLog: Sendable {
  private struct State {
    var messages: [String] = []
    var waiters: [(prefix: String, continuation: CheckedContinuation<Void, Never>)] = []
  }

  private let state = Mutex(State())
  private let holdOn: String
  private let gate = DispatchSemaphore(value: 0)

  /// Holds the thread that logs a message starting with `holdOn`.
  init(holdingOn holdOn: String) {
    self.holdOn = holdOn
  }

  func logger() -> Logger {
    var logger = Logger(label: "executor-test") { _ in EventLogHandler { _, message, _ in self.logged(message) } }
    logger.logLevel = .debug
    return logger
  }

  /// Returns once a message starting with `prefix` has been logged, or when the waiting task is
  /// cancelled (the test's time limit), and says which.
  @discardableResult
  func waitFor(_ prefix: String) async -> Bool {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let seen = state.withLock { state in
          if Task.isCancelled || state.messages.contains(where: { $0.hasPrefix(prefix) }) { return true }
          state.waiters.append((prefix, continuation))
          return false
        }
        if seen { continuation.resume() }
      }
      return state.withLock { $0.messages.contains(where: { $0.hasPrefix(prefix) }) }
    } onCancel: {
      let waiting = state.withLock { state in
        defer { state.waiters.removeAll() }
        return state.waiters.map(\.continuation)
      }
      for waiter in waiting { waiter.resume() }
      release()
    }
  }

  /// Lets the held thread go on (and any later one that logs the message).
  func release() {
    for _ in 0..<4 { gate.signal() }
  }

  private func logged(_ message: String) {
    let ready = state.withLock { state in
      state.messages.append(message)
      let ready = state.waiters.filter { message.hasPrefix($0.prefix) }.map(\.continuation)
      state.waiters.removeAll { message.hasPrefix($0.prefix) }
      return ready
    }
    for waiter in ready { waiter.resume() }
    if message.hasPrefix(holdOn) { gate.wait() }
  }
}

@Suite("executor: a coordinator's messages read and not yet handled are bounded", .timeLimit(.minutes(3)))
struct InboundBoundTests {
  @Test("while the event loop is held, the executor reads two messages ahead and then stops reading; released, it handles them all")
  func readingStopsAtTheBound() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let coordinator = FakeCoordinator()
    let log = HoldingLog(holdingOn: "ignored a second Registered")
    defer { log.release() }
    var configuration = ExecutorStreamTests.configuration(slots: 1, scratch: scratch)
    configuration.inboundMessagesPerStream = 2
    let metrics = TestMetrics()
    let executor = Executor(
      configuration: configuration, transports: [coordinator.transport], clock: ManualClock(), logger: log.logger(), metricsFactory: metrics)
    let running = Task { try await executor.run() }
    defer { running.cancel() }

    let (connection, _, _) = try await coordinator.accept()
    // A second Registered makes the event loop log a warning, which the log holds.
    connection.send(.with { $0.registered = .with { $0.coordinatorID = "fake-coordinator" } })
    #expect(await log.waitFor("ignored a second Registered"))
    // Three more messages: two are read ahead, the third finds the bound.
    for _ in 0..<3 { connection.send(.with { $0.heartbeatAck = .with { $0.eligible = true } }) }
    connection.send(ExecutorStreamTests.lease(fence: 42, operator: "noop"))
    let paused = await log.waitFor("paused reading a coordinator's stream")
    log.release()
    #expect(paused, "the executor read on past its bound")
    guard paused else { return }
    #expect(try metrics.expectCounter("hourglass_executor_inbound_waits_total", [("executor", "executor-test")]).totalValue == 1)
    // Nothing was lost: the lease behind them runs and its result comes back.
    let result = try await connection.receive()
    #expect(result.result.runID == "run-1" && result.result.fence == 42 && result.result.outcome == .succeeded, "\(result)")
    running.cancel()
    _ = await running.result
  }
}
