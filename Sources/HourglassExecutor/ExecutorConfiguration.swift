#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// How an ``Executor`` runs: who it is, how much it runs at once, its timers and limits.
public struct ExecutorConfiguration: Sendable, Hashable {
  /// Exponential backoff between reconnection attempts.
  public struct Backoff: Sendable, Hashable {
    /// The first delay.
    public var initial: Duration
    /// The largest delay.
    public var maximum: Duration
    /// The factor between two delays (≥ 1).
    public var multiplier: Double
    /// The fraction of each delay drawn at random (0 = none, 1 = anywhere in [0, delay]).
    public var jitter: Double

    /// 100 ms doubling to 30 s, with 20% jitter.
    public static var defaults: Backoff {
      Backoff(initial: .milliseconds(100), maximum: .seconds(30), multiplier: 2, jitter: 0.2)
    }

    /// Creates a backoff policy.
    public init(initial: Duration, maximum: Duration, multiplier: Double, jitter: Double) {
      self.initial = initial
      self.maximum = maximum
      self.multiplier = multiplier
      self.jitter = jitter
    }

    /// The delay before attempt `attempt` (0-based), with `random` in [0, 1).
    public func delay(attempt: Int, random: Double) -> Duration {
      var delay = initial
      var step = 0
      while step < attempt, delay < maximum {
        delay = delay * multiplier
        step += 1
      }
      if delay > maximum { delay = maximum }
      return delay * (1 - jitter * random)
    }
  }

  /// This executor's stable name; the coordinator checks it against the certificate's CN.
  public var executorID: String
  /// Runs at once, in all operators.
  public var slots: Int
  /// The operators this executor offers, by name (`exec`, `noop`, or a custom operator's).
  public var operators: [String]
  /// The heartbeat interval used until, or unless, the coordinator names one in `Registered`.
  public var heartbeatInterval: Duration
  /// The lease length assumed when neither the grant nor `Registered` names one.
  public var leaseDurationFallback: Duration
  /// Delays between reconnection attempts.
  public var reconnectBackoff: Backoff
  /// How long running tasks may go on after a graceful shutdown begins, before they are killed.
  public var drainGrace: Duration
  /// How long to wait, once drained, for the coordinator to end the stream.
  public var closeTimeout: Duration
  /// Where `exec` runs get their temporary directories.
  public var temporaryDirectory: String
  /// Limits for `exec` runs (its `temporaryRoot` is replaced by ``temporaryDirectory``).
  public var exec: ExecOperator.Configuration
  /// Reported to the coordinator in `Register`.
  public var version: String
  /// Most coordinator messages one stream may have read and not yet handled; past it the
  /// executor stops reading that stream (the stream's flow control then holds the
  /// coordinator back).
  public var inboundMessagesPerStream: Int = 1_024
  /// Most bytes of such messages (mostly the binaries and arguments of leases).
  public var inboundBytesPerStream: Int = 64 << 20

  /// One slot, `exec` and `noop`, 10 s heartbeats, 30 s drain grace, /tmp; 1,024 messages or
  /// 64 MiB read ahead per coordinator stream.
  public static var defaults: ExecutorConfiguration {
    ExecutorConfiguration(
      executorID: "executor",
      slots: 1,
      operators: ["exec", "noop"],
      heartbeatInterval: .seconds(10),
      leaseDurationFallback: .seconds(30),
      reconnectBackoff: .defaults,
      drainGrace: .seconds(30),
      closeTimeout: .seconds(5),
      temporaryDirectory: "/tmp",
      exec: .defaults,
      version: "hourglass-executor/1"
    )
  }

  /// Creates a configuration; see ``defaults``.
  public init(
    executorID: String, slots: Int, operators: [String], heartbeatInterval: Duration, leaseDurationFallback: Duration,
    reconnectBackoff: Backoff, drainGrace: Duration, closeTimeout: Duration, temporaryDirectory: String,
    exec: ExecOperator.Configuration, version: String
  ) {
    self.executorID = executorID
    self.slots = slots
    self.operators = operators
    self.heartbeatInterval = heartbeatInterval
    self.leaseDurationFallback = leaseDurationFallback
    self.reconnectBackoff = reconnectBackoff
    self.drainGrace = drainGrace
    self.closeTimeout = closeTimeout
    self.temporaryDirectory = temporaryDirectory
    self.exec = exec
    self.version = version
  }

  /// Checks every field; the error names the first bad one.
  public func validate() throws(ExecutorConfigurationError) {
    func fail(_ field: String, _ problem: String) -> ExecutorConfigurationError {
      ExecutorConfigurationError(field: field, problem: problem)
    }
    if executorID.isEmpty { throw fail("executorID", "must not be empty") }
    if slots < 1 || slots > 65_535 { throw fail("slots", "must be between 1 and 65535, not \(slots)") }
    if operators.isEmpty { throw fail("operators", "must name at least one operator") }
    if Set(operators).count != operators.count { throw fail("operators", "names an operator twice: \(operators)") }
    if heartbeatInterval <= .zero { throw fail("heartbeatInterval", "must be positive") }
    if leaseDurationFallback <= .zero { throw fail("leaseDurationFallback", "must be positive") }
    if reconnectBackoff.initial <= .zero { throw fail("reconnectBackoff.initial", "must be positive") }
    if reconnectBackoff.maximum < reconnectBackoff.initial {
      throw fail("reconnectBackoff.maximum", "must be at least reconnectBackoff.initial")
    }
    if !(reconnectBackoff.multiplier >= 1) { throw fail("reconnectBackoff.multiplier", "must be at least 1") }
    if !(0...1).contains(reconnectBackoff.jitter) { throw fail("reconnectBackoff.jitter", "must be between 0 and 1") }
    if drainGrace < .zero { throw fail("drainGrace", "must not be negative") }
    if closeTimeout < .zero { throw fail("closeTimeout", "must not be negative") }
    if inboundMessagesPerStream < 1 { throw fail("inboundMessagesPerStream", "must be at least 1") }
    if inboundBytesPerStream < 1 { throw fail("inboundBytesPerStream", "must be at least 1") }
    if !temporaryDirectory.hasPrefix("/") { throw fail("temporaryDirectory", "must be an absolute path, not \"\(temporaryDirectory)\"") }
    if exec.openFileLimit < 3 { throw fail("exec.openFileLimit", "must be at least 3") }
    if let bytes = exec.addressSpaceLimitBytes, bytes < 1 << 20 { throw fail("exec.addressSpaceLimitBytes", "must be at least 1 MiB") }
    if let seconds = exec.cpuTimeLimitSeconds, seconds < 1 { throw fail("exec.cpuTimeLimitSeconds", "must be at least 1") }
    if exec.outputTailLimit < 1 { throw fail("exec.outputTailLimit", "must be positive") }
    if exec.killGrace < .zero { throw fail("exec.killGrace", "must not be negative") }
    if !exec.shell.hasPrefix("/") { throw fail("exec.shell", "must be an absolute path") }
    try validateRunAs(effectiveUID: UInt32(geteuid()))
  }

  /// The checks of ``ExecOperator/Configuration/runAs``, for a process whose effective user id
  /// is `effectiveUID`: only root can start tasks as another user, through the privilege tool.
  func validateRunAs(effectiveUID: UInt32) throws(ExecutorConfigurationError) {
    guard let user = exec.runAs else { return }
    guard operators.contains("exec") else { return }
    if effectiveUID != 0 {
      throw ExecutorConfigurationError(field: "exec.runAs", problem: "needs the executor to run as root to start tasks as \(user)")
    }
    if !exec.privilegeTool.hasPrefix("/") || access(exec.privilegeTool, X_OK) != 0 {
      throw ExecutorConfigurationError(
        field: "exec.privilegeTool", problem: "\(exec.privilegeTool) is not an executable (Debian's util-linux package has setpriv)")
    }
  }
}

/// A configuration field with a value the executor cannot use.
public struct ExecutorConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The field, as a key path from ``ExecutorConfiguration`` (`reconnectBackoff.initial`).
  public var field: String
  /// What is wrong with it.
  public var problem: String

  public var description: String { "invalid executor configuration: \(field) \(problem)" }
}
