import Prometheus

/// The Prometheus side of Hourglass's metrics: a `MetricsFactory` over a registry, with the
/// histogram buckets each Hourglass histogram needs.
///
/// The coordinator and the executor record through the swift-metrics API with a factory they
/// are given; the `hourglass` executable (or `hourglass dev`, or a test) creates the registry,
/// passes ``makeFactory(registry:)`` to them, and serves the registry with ``MetricsServer``.
/// Nothing here touches the global `MetricsSystem`.
public enum HourglassMetrics {
  /// Buckets for lateness: from a millisecond (on time) to ten minutes (an executor shortage).
  public static let latenessBuckets: [Duration] = [
    .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
    .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    .seconds(60), .seconds(300), .seconds(600),
  ]

  /// Buckets for RPC handling, heartbeat round trips and store writes: 100 µs to 10 s.
  public static let latencyBuckets: [Duration] = [
    .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
    .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
    .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
  ]

  /// The histograms that get ``latenessBuckets``.
  public static let latenessHistograms: Set<String> = ["hourglass_dispatch_lateness_seconds"]

  /// The histograms that get ``latencyBuckets``.
  public static let latencyHistograms: Set<String> = [
    "hourglass_rpc_server_handling_seconds", "hourglass_executor_heartbeat_round_trip_seconds", "hourglass_store_write_seconds",
  ]

  /// A factory that records into `registry`, with Hourglass's buckets.
  public static func makeFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
    var factory = PrometheusMetricsFactory(registry: registry)
    for name in latenessHistograms { factory.durationHistogramBuckets[name] = latenessBuckets }
    for name in latencyHistograms { factory.durationHistogramBuckets[name] = latencyBuckets }
    return factory
  }
}
