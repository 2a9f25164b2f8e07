import CoreMetrics
import Synchronization

/// The executor's own metrics, labelled with its name so that several executors can share one
/// registry (`hourglass dev`). Recorded through the swift-metrics API into the factory the
/// executor was given; docs/operations.md lists every one.
final class ExecutorMetrics: Sendable {
  private let factory: any MetricsFactory
  private let executorID: String
  /// Coordinators with a registered stream.
  let connected: Gauge
  /// Coordinators the executor keeps a link to: given at start, or announced by the cluster.
  let known: Gauge
  /// Slots configured.
  let slots: Gauge
  /// Runs in progress.
  let running: Gauge
  /// 1 while every coordinator finds this executor's clock inside the skew bound.
  let eligible: Gauge
  /// `CreditWithdrawal`s sent: slots asked back from a coordinator not using them.
  let creditWithdrawals: Counter
  /// Credits the coordinators gave back in answer.
  let creditsWithdrawn: Counter
  /// Results sent again because their stream ended before acknowledging them.
  let resultsResent: Counter
  /// Leases received and started.
  let runsStarted: Counter
  /// Runs stopped because their lease ran out without a renewal (self-fencing).
  let selfFenced: Counter
  /// Times a coordinator stream stopped being read because its messages read and not yet
  /// handled were at their bound.
  let inboundWaits: Counter
  /// Heartbeat round trips to the coordinator.
  let heartbeatRoundTrip: CoreMetrics.Timer
  private let finished = Mutex<[String: Counter]>([:])

  init(factory: any MetricsFactory, executorID: String) {
    self.factory = factory
    self.executorID = executorID
    let dimensions = [("executor", executorID)]
    connected = Gauge(label: "hourglass_executor_connected", dimensions: dimensions, factory: factory)
    known = Gauge(label: "hourglass_executor_coordinators", dimensions: dimensions, factory: factory)
    slots = Gauge(label: "hourglass_executor_slots", dimensions: dimensions, factory: factory)
    running = Gauge(label: "hourglass_executor_running", dimensions: dimensions, factory: factory)
    eligible = Gauge(label: "hourglass_executor_eligible", dimensions: dimensions, factory: factory)
    runsStarted = Counter(label: "hourglass_executor_runs_started_total", dimensions: dimensions, factory: factory)
    resultsResent = Counter(label: "hourglass_executor_results_resent_total", dimensions: dimensions, factory: factory)
    selfFenced = Counter(label: "hourglass_executor_self_fenced_total", dimensions: dimensions, factory: factory)
    creditWithdrawals = Counter(label: "hourglass_executor_credit_withdrawals_total", dimensions: dimensions, factory: factory)
    creditsWithdrawn = Counter(label: "hourglass_executor_credits_withdrawn_total", dimensions: dimensions, factory: factory)
    inboundWaits = Counter(label: "hourglass_executor_inbound_waits_total", dimensions: dimensions, factory: factory)
    heartbeatRoundTrip = CoreMetrics.Timer(label: "hourglass_executor_heartbeat_round_trip_seconds", dimensions: dimensions, factory: factory)
  }

  /// A run ended with `status` (as the operator reported it, before any result delivery).
  func runFinished(_ status: RunOutcome.Status) {
    let outcome: String
    switch status {
    case .succeeded: outcome = "succeeded"
    case .failed: outcome = "failed"
    case .timedOut: outcome = "timed_out"
    case .cancelled: outcome = "cancelled"
    }
    let counter = finished.withLock { counters in
      if let counter = counters[outcome] { return counter }
      let counter = Counter(
        label: "hourglass_executor_runs_finished_total", dimensions: [("executor", executorID), ("outcome", outcome)], factory: factory)
      counters[outcome] = counter
      return counter
    }
    counter.increment()
  }
}
