import CoreMetrics
import HourglassCore
import HourglassRPC
import HourglassStore
import HourglassTransport
import Logging
import ServiceLifecycle

/// The Hourglass server: the task service for users, the executor stream, and the dispatcher
/// that pushes due runs under leases. A `Service`: `run()` serves until graceful shutdown, then
/// stops accepting, lets calls in flight finish, and stops dispatching.
public final class Coordinator: Service, Sendable {
  private let configuration: CoordinatorConfiguration
  private let store: any TaskStore
  private let clock: any CoordinatorClock
  private let logger: Logger
  let dispatcher: Dispatcher
  /// Removes finished and deleted tasks past their retention.
  let purger: TaskPurger
  /// The handlers, for any transport (TLS in production, in-process in tests).
  public let server: RPCServer
  private let listener: RPCTLSServer?

  /// Creates a coordinator.
  /// - Parameters:
  ///   - tls: where to listen; `nil` serves only through ``server`` (in-process tests).
  ///   - metricsFactory: where the metrics go (docs/operations.md lists them): the factory of
  ///     a Prometheus registry that a `MetricsServer` serves, or the global `MetricsSystem`'s
  ///     by default (a no-op unless the program bootstrapped it).
  public init(
    configuration: CoordinatorConfiguration, store: any TaskStore, tls: RPCTLSServer.Configuration?, clock: any CoordinatorClock = SystemCoordinatorClock(),
    logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
  ) throws {
    try configuration.validate()
    self.configuration = configuration
    self.store = store
    self.clock = clock
    self.logger = logger
    let metrics = CoordinatorMetrics(factory: metricsFactory)
    let dispatcher = Dispatcher(store: store, clock: clock, configuration: configuration, logger: logger, metrics: metrics)
    self.dispatcher = dispatcher
    self.purger = TaskPurger(store: store, clock: clock, configuration: configuration, logger: logger, metrics: metrics)
    var router = RPCRouter()
    TaskService(
      store: store, dispatcher: dispatcher, clock: clock, configuration: configuration, logger: logger, metrics: metrics,
      waitingSchedules: InFlightBudget(items: configuration.schedulesInFlight, bytes: configuration.scheduleBytesInFlight)
    ).register(into: &router)
    let results = StoreBatcher(
      maxBatch: configuration.resultBatch, spacingMicros: configuration.resultSpacingMicros, unanswered: RecordOutcome.staleFence
    ) {
      let started = ContinuousClock.now
      let outcomes = try await store.recordResults($0)
      metrics.storeWrite(.result, since: started)
      return outcomes
    }
    let renewals = StoreBatcher(maxBatch: configuration.resultBatch, unanswered: false) {
      let started = ContinuousClock.now
      let renewed = try await store.renewLeases($0)
      metrics.storeWrite(.renewal, since: started)
      return renewed
    }
    ExecutorService(
      store: store, dispatcher: dispatcher, results: results, renewals: renewals, clock: clock, configuration: configuration,
      logger: logger, metrics: metrics
    )
    .register(into: &router)
    let methods = Set(router.methods)
    let onCallFinished: @Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void = { _, context, status, duration in
      metrics.rpcFinished(method: methods.contains(context.method) ? context.method : "unknown", code: status.code, duration: duration)
    }
    self.server = RPCServer(router: router, logger: logger, onCallFinished: onCallFinished)
    self.listener = tls.map {
      RPCTLSServer(configuration: $0, server: RPCServer(router: router, logger: logger, onCallFinished: onCallFinished), logger: logger)
    }
  }

  /// The port the TLS listener is bound to, once it is.
  public func port() async throws -> Int? {
    guard let listener else { return nil }
    return try await listener.localAddress().port
  }

  /// Runs queued for dispatch, for tests and metrics.
  public func queuedRuns() async -> Int { await dispatcher.queuedCount }

  /// Runs dispatched since start, for tests and metrics.
  public func dispatchedRuns() async -> Int { await dispatcher.dispatched }

  /// Run results recorded (with a current fence) since start, for tests, metrics and benchmarks.
  public func recordedResults() async -> Int { await dispatcher.recorded }

  /// Returns once at least `count` run results have been recorded since start: a signal for tests
  /// and benchmarks to wait on instead of polling.
  public func waitUntilRecorded(_ count: Int) async { await dispatcher.waitUntilRecorded(count) }

  public func run() async throws {
    let dispatcher = self.dispatcher
    let listener = self.listener
    let purger = self.purger
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        // Dispatching stops when shutdown begins; leases in flight run out or finish.
        try await cancelWhenGracefulShutdown {
          try await dispatcher.run()
        }
      }
      group.addTask {
        await cancelWhenGracefulShutdown { await purger.run() }
      }
      if let listener {
        group.addTask { try await listener.run() }
      }
    }
    logger.info("coordinator stopped")
  }
}
