import HourglassExecutor
import HourglassProto
import Logging
import MetricsTestKit
import Testing

@Suite("executor metrics", .timeLimit(.minutes(1)))
struct ExecutorMetricsTests {
  @Test("a stream and two runs move the executor's gauges and counters by exactly one each")
  func runs() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let metrics = TestMetrics()
    let coordinator = FakeCoordinator()
    var logger = Logger(label: "executor-test")
    logger.logLevel = .critical
    let executor = Executor(
      configuration: ExecutorStreamTests.configuration(slots: 2, scratch: scratch), transport: coordinator.transport, clock: ManualClock(),
      logger: logger, metricsFactory: metrics)
    let running = Task { try await executor.run() }
    defer { running.cancel() }
    let labels = [("executor", "executor-test")]

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
    running.cancel()
    _ = await running.result
  }
}
