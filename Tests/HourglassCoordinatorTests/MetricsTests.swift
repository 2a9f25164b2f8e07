import CoreMetrics
import Foundation
import HourglassCoordinator
import HourglassObservability
import HourglassProto
import HourglassRPC
import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import SwiftProtobuf
import Testing

@Suite("Metrics: /metrics after scheduling, running, failing and retrying")
struct MetricsTests {
  static let schedule = "/hourglass.v1.TaskService/Schedule"
  static let get = "/hourglass.v1.TaskService/Get"
  static let connect = "/hourglass.v1.ExecutorService/Connect"

  /// Runs a metrics listener on 127.0.0.1:0 for `body`.
  static func withListener<T: Sendable>(_ registry: PrometheusCollectorRegistry, _ body: (Int) async throws -> T) async throws -> T {
    let server = try await MetricsServer.bind(
      host: "127.0.0.1", port: 0, registry: registry, logger: Logger(label: "test.metrics"), idleTimeout: .minutes(5))
    let running = Task { try await server.run() }
    do {
      let result = try await body(server.port)
      running.cancel()
      _ = await running.result
      return result
    } catch {
      running.cancel()
      _ = await running.result
      throw error
    }
  }

  /// Scrapes over HTTP and parses strictly.
  static func scrape(_ port: Int) async throws -> PrometheusText {
    let response = try await HTTPScrape.request("/metrics", port: port)
    #expect(response.status == 200)
    #expect(response.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
    return try PrometheusText(response.body)
  }

  @Test("counters and histograms move by exactly the runs scheduled, dispatched, failed and retried")
  func movement() async throws {
    let registry = PrometheusCollectorRegistry()
    try await Harness.with(metricsFactory: HourglassMetrics.makeFactory(registry: registry)) { harness in
      try await Self.withListener(registry) { port in
        let before = try await Self.scrape(port)
        func delta(_ name: String, _ labels: [String: String] = [:], in now: PrometheusText) -> Double {
          (now.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0)
        }

        // Two tasks due at +10 s; B fails and may try twice.
        let alice = harness.client("alice")
        let a = try await alice.schedule(once: 10)
        var retry = Hourglass_V1_RetryPolicy()
        retry.maxAttempts = 2
        retry.initialBackoff = Google_Protobuf_Duration(seconds: 5)
        let b = try await alice.schedule(once: 10, retry: retry)
        await #expect(throws: RPCError.self) { _ = try await alice.get("not-a-task-id") }

        var now = try await Self.scrape(port)
        #expect(delta("hourglass_tasks_scheduled_total", in: now) == 2)
        #expect(now.value("hourglass_runs_queued") == 2)
        #expect(now.value("hourglass_runs_overdue") == 0)
        #expect(delta("hourglass_rpc_server_handled_total", ["method": Self.schedule, "code": "OK"], in: now) == 2)
        #expect(delta("hourglass_rpc_server_handled_total", ["method": Self.get, "code": "INVALID_ARGUMENT"], in: now) == 1)
        #expect(delta("hourglass_rpc_server_handling_seconds_count", ["method": Self.schedule], in: now) == 2)
        // Each Schedule's insert is timed, into the latency buckets (100 µs … 10 s).
        #expect(delta("hourglass_store_write_seconds_count", ["operation": "insert"], in: now) == 2)
        #expect(delta("hourglass_store_write_seconds_bucket", ["operation": "insert", "le": "10.0"], in: now) == 2)

        // Both go out on time: lateness 0.
        let executor = try await harness.executor("exec-1", slots: 4)
        executor.grant(2)
        harness.advance(seconds: 10)
        var leases = [try await executor.nextLease(), try await executor.nextLease()]
        leases.sort { $0.taskID == a && $1.taskID != a }
        #expect(leases.map(\.taskID) == [a, b])
        now = try await Self.scrape(port)
        #expect(delta("hourglass_runs_dispatched_total", in: now) == 2)
        #expect(delta("hourglass_dispatch_lateness_seconds_count", in: now) == 2)
        #expect(delta("hourglass_store_write_seconds_count", ["operation": "lease"], in: now) >= 1)
        #expect(delta("hourglass_dispatch_lateness_seconds_bucket", ["le": "0.001"], in: now) == 2)
        #expect(delta("hourglass_dispatch_lateness_seconds_sum", in: now) == 0)
        #expect(now.value("hourglass_runs_queued") == 0)
        #expect(now.value("hourglass_executors_connected") == 1)
        #expect(now.value("hourglass_executor_free_slots", ["executor": "exec-1"]) == 0)

        // A succeeds; B fails its first attempt and is retried 5 s later.
        #expect(try await executor.report(leases[0], outcome: .succeeded))
        executor.grant(1)  // processed before the next report: one stream, in order
        #expect(try await executor.report(leases[1], outcome: .failed, exitCode: 1))
        now = try await Self.scrape(port)
        #expect(delta("hourglass_runs_succeeded_total", in: now) == 1)
        #expect(delta("hourglass_runs_failed_total", in: now) == 1)
        #expect(delta("hourglass_runs_retried_total", in: now) == 1)
        #expect(now.value("hourglass_task_failures_total", ["operator": "exec"]) == nil)
        #expect(delta("hourglass_store_write_seconds_count", ["operation": "result"], in: now) >= 1)
        #expect(now.value("hourglass_runs_queued") == 1)
        #expect(now.value("hourglass_executor_free_slots", ["executor": "exec-1"]) == 1)

        // The retry goes out 2 s after its due time, and fails for good.
        harness.advance(seconds: 7)
        let second = try await executor.nextLease()
        #expect(second.taskID == b)
        #expect(second.attempt == 2)
        #expect(try await executor.report(second, outcome: .failed, exitCode: 1))
        now = try await Self.scrape(port)
        #expect(delta("hourglass_runs_dispatched_total", in: now) == 3)
        #expect(delta("hourglass_runs_failed_total", in: now) == 2)
        #expect(delta("hourglass_runs_retried_total", in: now) == 1)
        #expect(delta("hourglass_task_failures_total", ["operator": "exec"], in: now) == 1)
        #expect(delta("hourglass_dispatch_lateness_seconds_count", in: now) == 3)
        #expect(delta("hourglass_dispatch_lateness_seconds_sum", in: now) == 2)
        #expect(delta("hourglass_dispatch_lateness_seconds_bucket", ["le": "1.0"], in: now) == 2)
        #expect(delta("hourglass_dispatch_lateness_seconds_bucket", ["le": "2.5"], in: now) == 3)

        // Two overdue runs and one credit: the first goes out 16 s late, the other waits.
        let c = try await alice.schedule(once: 1)
        let d = try await alice.schedule(once: 1)
        executor.grant(1)
        let late = try await executor.nextLease()
        #expect([c, d].contains(late.taskID))
        now = try await Self.scrape(port)
        #expect(now.value("hourglass_runs_queued") == 1)
        #expect(now.value("hourglass_runs_overdue") == 1)
        #expect(delta("hourglass_dispatch_lateness_seconds_bucket", ["le": "10.0"], in: now) == 3)
        #expect(delta("hourglass_dispatch_lateness_seconds_bucket", ["le": "30.0"], in: now) == 4)
        #expect(delta("hourglass_dispatch_lateness_seconds_sum", in: now) == 18)

        // A clock 2 s ahead is refused.
        let ack = try await executor.heartbeat(executorTimeMicros: harness.clock.nowMicros() + 2_000_000)
        #expect(!ack.eligible)
        now = try await Self.scrape(port)
        #expect(now.value("hourglass_executor_clock_skew_seconds", ["executor": "exec-1"]) == 2)
        #expect(delta("hourglass_executor_skew_refusals_total", ["executor": "exec-1"], in: now) == 1)
        #expect(now.value("hourglass_executors_skew_refused") == 1)
        for partition in 0..<4 {
          #expect(now.value("hourglass_shard_owner", ["partition": "\(partition)", "owner": "coordinator"]) == 1)
        }

        // The stream ends: its RPC is counted, its gauges go.
        await executor.close()
        now = try await Self.scrape(port)
        #expect(delta("hourglass_rpc_server_handled_total", ["method": Self.connect, "code": "OK"], in: now) == 1)
        #expect(now.value("hourglass_executors_connected") == 0)
        #expect(now.value("hourglass_executor_free_slots", ["executor": "exec-1"]) == nil)

        // Names and types follow the conventions.
        for family in now.families.values {
          #expect(family.name.hasPrefix("hourglass_"), "\(family.name)")
          #expect((family.type == "counter") == family.name.hasSuffix("_total"), "\(family.name) is a \(family.type)")
        }
        #expect(now.type(of: "hourglass_dispatch_lateness_seconds") == "histogram")
        #expect(now.type(of: "hourglass_rpc_server_handling_seconds") == "histogram")
      }
    }
  }

  @Test("the listener answers 404 off /metrics and 405 for other methods, and stops on graceful shutdown")
  func listener() async throws {
    let registry = PrometheusCollectorRegistry()
    CoreMetrics.Counter(label: "hourglass_probe_total", factory: PrometheusMetricsFactory(registry: registry)).increment()
    // A loaded machine can hold this test's task for over ten seconds between connecting and
    // writing its request (seen in CI): the default idle timeout would close the connection.
    let server = try await MetricsServer.bind(
      host: "127.0.0.1", port: 0, registry: registry, logger: Logger(label: "test.metrics"), idleTimeout: .minutes(5))
    let group = ServiceGroup(services: [server], logger: Logger(label: "test.metrics"))
    try await withThrowingTaskGroup { tasks in
      tasks.addTask { try await group.run() }
      let ok = try await HTTPScrape.request("/metrics", port: server.port)
      #expect(ok.status == 200)
      #expect(ok.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
      #expect(try PrometheusText(ok.body).value("hourglass_probe_total") == 1)
      #expect(try await HTTPScrape.request("/metrics?x=1", port: server.port).status == 200)
      #expect(try await HTTPScrape.request("/", port: server.port).status == 404)
      #expect(try await HTTPScrape.request("/metricsz", port: server.port).status == 404)
      #expect(try await HTTPScrape.request("/metrics", method: "POST", port: server.port).status == 405)
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
  }

  @Test("a connection that sends nothing is closed after the idle timeout")
  func idleConnectionIsClosed() async throws {
    let server = try await MetricsServer.bind(
      host: "127.0.0.1", port: 0, registry: PrometheusCollectorRegistry(), logger: Logger(label: "test.metrics"), idleTimeout: .milliseconds(200))
    let running = Task { try await server.run() }
    let silent = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: server.port).get()
    // The close is the signal: the test ends when the server closes the connection.
    try await silent.closeFuture.get()
    running.cancel()
    _ = await running.result
  }
}

@Suite("Logs: one line per RPC, errors with their cause, never a payload")
struct RPCLogTests {
  @Test("an RPC's line names the method, status, caller, duration and task id")
  func rpcLine() async throws {
    let capture = LogCapture()
    try await Harness.with(logger: capture.logger(level: .info)) { harness in
      let alice = harness.client("alice")
      let secret = "#!/bin/sh\necho do-not-log-me\n"
      let id = try await alice.schedule(once: 10, blob: Array(secret.utf8))
      let line = await capture.first { $0.message == "rpc" && $0.metadata["hourglass.method"] == "\(MetricsTests.schedule)" }
      #expect(line.level == .info)
      #expect(line.metadata["hourglass.status"] == "OK")
      #expect(line.metadata["hourglass.task_id"] == "\(id)")
      #expect(line.metadata["hourglass.caller"]?.description.contains("alice") == true)
      #expect(line.metadata["hourglass.duration_ms"] != nil)

      _ = try? await alice.get("0190b2c4-0000-7000-8000-000000000000")
      let missing = await capture.first { $0.message == "rpc" && $0.metadata["hourglass.method"] == "\(MetricsTests.get)" }
      #expect(missing.metadata["hourglass.status"] == "NOT_FOUND")
      #expect(missing.metadata["hourglass.status_message"] != nil)
      #expect(missing.metadata["hourglass.task_id"] == "0190b2c4-0000-7000-8000-000000000000")

      for record in capture.records {
        #expect(!record.message.contains("do-not-log-me"))
        #expect(!record.metadata.values.contains { "\($0)".contains("do-not-log-me") })
      }
    }
  }
}

@Suite("docs/operations.md and the dashboard name the metrics that exist")
struct MetricsDocumentationTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// Metric names in the first column of the tables in docs/operations.md.
  static func documented() throws -> Set<String> {
    let text = try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
    var names: Set<String> = []
    for line in text.split(separator: "\n") where line.hasPrefix("| `hourglass_") {
      let cell = line.dropFirst(3).prefix { $0 != "`" }
      names.insert(String(cell))
    }
    return names
  }

  @Test("every metric the dashboard queries is documented")
  func dashboard() throws {
    let documented = try Self.documented()
    let text = try String(contentsOf: Self.root.appendingPathComponent("tools/grafana-dashboard.json"), encoding: .utf8)
    _ = try JSONSerialization.jsonObject(with: Data(text.utf8))
    let regex = try Regex(#"hourglass_[a-z_]+"#)
    var used: Set<String> = []
    for match in text.matches(of: regex) {
      var name = String(text[match.range])
      for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && !documented.contains(name) {
        name = String(name.dropLast(suffix.count))
      }
      used.insert(name)
    }
    #expect(used.subtracting(documented).isEmpty, "undocumented: \(used.subtracting(documented).sorted())")
    #expect(used.count >= 15)
  }

  @Test("every metric the coordinator exposes is documented")
  func coordinator() async throws {
    let registry = PrometheusCollectorRegistry()
    let documented = try Self.documented()
    try await Harness.with(metricsFactory: HourglassMetrics.makeFactory(registry: registry)) { harness in
      let alice = harness.client("alice")
      _ = try await alice.schedule(once: 10)
      let executor = try await harness.executor("exec-1")
      executor.grant(1)
      harness.advance(seconds: 10)
      _ = try await executor.nextLease()
      let exposed = try PrometheusText(registry.emitToString())
      let names = Set(exposed.families.keys)
      #expect(names.subtracting(documented).isEmpty, "undocumented: \(names.subtracting(documented).sorted())")
      await executor.close()
    }
  }
}
