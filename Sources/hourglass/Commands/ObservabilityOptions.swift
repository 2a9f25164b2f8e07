import ArgumentParser
import CoreMetrics
import HourglassObservability
import Logging
import Prometheus

extension LogFormat: ExpressibleByArgument {}

/// `--log-format` and `--metrics-listen`, shared by the long-running commands.
struct ObservabilityOptions: ParsableArguments {
  @Option(help: "Log format: text (human-readable lines) or json (one JSON object per line).")
  var logFormat: LogFormat = .text

  @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (off unless given).")
  var metricsListen: String?

  func validate() throws {
    if let metricsListen { _ = try CoordinatorCommand.hostPort(metricsListen, option: "--metrics-listen") }
  }

  /// Bootstraps swift-log with the chosen format; call once, before any `Logger` is made.
  func bootstrapLogging() {
    let format = logFormat
    LoggingSystem.bootstrap { label in format.makeHandler(label: label) }
  }

  /// The metrics factory to give the coordinator or executor, and the listener that serves it
  /// when `--metrics-listen` was given (no-op metrics otherwise).
  func metrics(logger: Logger) async throws -> (factory: any MetricsFactory, server: MetricsServer?) {
    try await Self.metrics(listen: metricsListen, logger: logger)
  }

  /// Metrics served at `listen` (`HOST:PORT`), or no-op metrics when `nil`.
  static func metrics(listen: String?, logger: Logger) async throws -> (factory: any MetricsFactory, server: MetricsServer?) {
    guard let listen else { return (NOOPMetricsHandler.instance, nil) }
    let (host, port) = try CoordinatorCommand.hostPort(listen, option: "--metrics-listen")
    let registry = PrometheusCollectorRegistry()
    let server = try await MetricsServer.bind(host: host, port: port, registry: registry, logger: logger)
    return (HourglassMetrics.makeFactory(registry: registry), server)
  }
}
