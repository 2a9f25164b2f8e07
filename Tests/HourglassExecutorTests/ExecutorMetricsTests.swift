import HourglassExecutor
import HourglassProto
import Logging
import MetricsTestKit
import Testing

@Suite("executor metrics", .timeLimit(.minutes(3)))
struct ExecutorMetricsTests {
  static let labels = [("executor", "executor-test")]

  /// Runs `body` while an executor with `slots` slots, its metrics in `metrics`, holds a stream
  /// to each of `coordinators`; stops it afterwards.
  static func withExecutor(slots: Int, on coordinators: [FakeCoordinator], metrics: TestMetrics, _ body: () async throws -> Void) async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    var logger = Logger(label: "executor-test")
    logger.logLevel = .critical
    let executor = Executor(
      configuration: ExecutorStreamTests.configuration(slots: slots, scratch: scratch), transports: coordinators.map(\.transport),
      clock: ManualClock(), logger: logger, metricsFactory: metrics)
    let running = Task { try await executor.run() }
    defer { running.cancel() }
    try await body()
    running.cancel()
    _ = await running.result
  }

  /// Answers the Register on the second coordinator's stream (id `b`).
  static func register(_ b: FakeConnection, withdrawals: Bool = false) async throws {
    guard case .register? = try await b.receive().kind else { throw FakeCoordinatorError("expected Register") }
    b.send(
      .with {
        $0.registered = .with {
          $0.coordinatorID = "b"; $0.withdrawals = withdrawals
        }
      })
  }

  @Test("a stream and two runs move the executor's gauges and counters by exactly one each")
  func runs() async throws {
    let metrics = TestMetrics()
    let coordinator = FakeCoordinator()
    let labels = Self.labels
    try await Self.withExecutor(slots: 2, on: [coordinator], metrics: metrics) {
      let (connection, _, _) = try await coordinator.accept()
      #expect(try metrics.expectGauge("hourglass_executor_connected", labels).lastValue == 1)
      #expect(try metrics.expectGauge("hourglass_executor_slots", labels).lastValue == 2)

      connection.send(ExecutorStreamTests.lease(runID: "run-1", fence: 1, operator: "noop"))
      #expect(try await connection.receive().result.outcome == .succeeded)
      #expect(try await connection.receive().credit.credits == 1)
      connection.send(ExecutorStreamTests.lease(runID: "run-2", fence: 2, script: "#!/bin/sh\nexit 3\n"))
      #expect(try await connection.receive().result.outcome == .failed)

      #expect(try metrics.expectCounter("hourglass_executor_runs_started_total", labels).totalValue == 2)
      #expect(try metrics.expectCounter("hourglass_executor_runs_finished_total", labels + [("outcome", "succeeded")]).totalValue == 1)
      #expect(try metrics.expectCounter("hourglass_executor_runs_finished_total", labels + [("outcome", "failed")]).totalValue == 1)
      #expect(try metrics.expectCounter("hourglass_executor_self_fenced_total", labels).totalValue == 0)
    }
  }

  @Test("with two coordinators: both streams count as connected, and a withdrawal and the credits it brought back are counted")
  func twoCoordinators() async throws {
    let metrics = TestMetrics()
    let first = FakeCoordinator()
    let second = FakeCoordinator()
    let labels = Self.labels
    try await Self.withExecutor(slots: 2, on: [first, second], metrics: metrics) {
      let (a, _, credits) = try await first.accept(withdrawals: true)
      #expect(credits == 2)
      let b = await second.nextConnection()
      try await Self.register(b, withdrawals: true)
      // b has no credit and both slots are a's: a is asked for one back.
      let ask = try await a.receive()
      #expect(ask.withdrawal.credits == 1)
      a.send(.with { $0.withdrawn.credits = 1 })
      #expect(try await b.receive().credit.credits == 1)
      #expect(try metrics.expectGauge("hourglass_executor_connected", labels).lastValue == 2)
      #expect(try metrics.expectCounter("hourglass_executor_credit_withdrawals_total", labels).totalValue == 1)
      #expect(try metrics.expectCounter("hourglass_executor_credits_withdrawn_total", labels).totalValue == 1)
    }
  }

  @Test("a result whose stream fails before its acknowledgement goes again on the other coordinator's stream, and is counted")
  func resentResult() async throws {
    let metrics = TestMetrics()
    let first = FakeCoordinator()
    let second = FakeCoordinator()
    try await Self.withExecutor(slots: 1, on: [first, second], metrics: metrics) {
      let (a, _, credits) = try await first.accept()
      #expect(credits == 1)
      let b = await second.nextConnection()
      try await Self.register(b)
      a.send(ExecutorStreamTests.lease(runID: "run-1", fence: 1, operator: "noop"))
      #expect(try await a.receive().result.runID == "run-1")
      // a crashes before it acknowledges the result.
      a.fail()
      var resent: Hourglass_V1_RunResult?
      while resent == nil, let message = try await b.receiveOrEnd() {
        if case .result(let result)? = message.kind { resent = result }
      }
      #expect(resent?.runID == "run-1" && resent?.fence == 1)
      #expect(try metrics.expectCounter("hourglass_executor_results_resent_total", Self.labels).totalValue == 1)
    }
  }
}
