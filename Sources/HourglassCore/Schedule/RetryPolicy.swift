/// How a failed run is retried: how many attempts, how long to wait between them, and how long
/// one attempt may take.
///
/// The delay before attempt `n + 1`, after attempt `n` failed, is
/// `min(maxBackoff, initialBackoff × multiplierⁿ⁻¹)`, then reduced by up to `jitter` of itself
/// by a deterministic factor taken from a seed (the run id's hash) and the attempt number. So the
/// delays of one run are reproducible, while runs of many tasks that failed together spread out.
///
/// JSON: `{"maxAttempts": 5, "initialBackoff": "1s", "multiplier": 2, "maxBackoff": "5m",
/// "jitter": 0.2, "attemptTimeout": "10m"}` — every key optional, durations as ``DurationText``.
public struct RetryPolicy: Sendable, Hashable, Codable {
  /// Total attempts including the first, 1–100. 1 means "never retry".
  public var maxAttempts: Int
  /// Delay before the first retry, in microseconds.
  public var initialBackoff: Int64
  /// Factor by which the delay grows after each failed attempt, 1–10.
  public var multiplier: Double
  /// Upper bound for the delay, in microseconds.
  public var maxBackoff: Int64
  /// Fraction 0–1 by which a delay may be shortened at random (deterministically per seed).
  public var jitter: Double
  /// Longest one attempt may run before it is killed and counted as failed, in microseconds;
  /// `nil` for no limit.
  public var attemptTimeout: Int64?

  /// The defaults: 3 attempts, 1 s initial backoff doubling up to 5 min, 20% jitter, no timeout.
  public static let defaults = RetryPolicy(
    uncheckedMaxAttempts: 3, initialBackoff: 1_000_000, multiplier: 2, maxBackoff: 300_000_000,
    jitter: 0.2,
    attemptTimeout: nil)

  /// Creates a policy, validating every field.
  public init(
    maxAttempts: Int = 3, initialBackoff: Int64 = 1_000_000, multiplier: Double = 2,
    maxBackoff: Int64 = 300_000_000,
    jitter: Double = 0.2, attemptTimeout: Int64? = nil
  ) throws(ScheduleValidationError) {
    self.init(
      uncheckedMaxAttempts: maxAttempts, initialBackoff: initialBackoff, multiplier: multiplier,
      maxBackoff: maxBackoff, jitter: jitter, attemptTimeout: attemptTimeout)
    try validate()
  }

  private init(
    uncheckedMaxAttempts: Int, initialBackoff: Int64, multiplier: Double, maxBackoff: Int64,
    jitter: Double,
    attemptTimeout: Int64?
  ) {
    self.maxAttempts = uncheckedMaxAttempts
    self.initialBackoff = initialBackoff
    self.multiplier = multiplier
    self.maxBackoff = maxBackoff
    self.jitter = jitter
    self.attemptTimeout = attemptTimeout
  }

  /// Checks every field, throwing an error that names it (`retry.max-attempts`, …).
  public func validate() throws(ScheduleValidationError) {
    func fail(_ field: String, _ reason: String) -> ScheduleValidationError {
      ScheduleValidationError(field: "retry." + field, reason: reason)
    }
    guard (1...100).contains(maxAttempts) else {
      throw fail("max-attempts", "\(maxAttempts) out of range 1-100")
    }
    guard initialBackoff >= 0 else { throw fail("initial-backoff", "must not be negative") }
    guard multiplier.isFinite, multiplier >= 1, multiplier <= 10 else {
      throw fail("multiplier", "\(multiplier) out of range 1-10")
    }
    guard maxBackoff >= initialBackoff else {
      throw fail(
        "max-backoff",
        "\(DurationText.format(maxBackoff)) is less than initial-backoff \(DurationText.format(initialBackoff))"
      )
    }
    guard maxBackoff <= 7 * 86_400_000_000 else { throw fail("max-backoff", "longer than 7 days") }
    guard jitter.isFinite, jitter >= 0, jitter <= 1 else {
      throw fail("jitter", "\(jitter) out of range 0-1")
    }
    if let timeout = attemptTimeout, timeout <= 0 {
      throw fail("attempt-timeout", "must be positive")
    }
  }

  /// The delay in microseconds before the next attempt, after attempt number `attempt` (1-based)
  /// failed; `nil` when `attempt` was the last one allowed.
  ///
  /// `seed` makes the jitter reproducible: pass ``StableHash`` of the run id (task id and
  /// scheduled time), so a coordinator that takes over computes the same delay.
  public func backoff(afterAttempt attempt: Int, seed: UInt64) -> Int64? {
    guard attempt >= 1, attempt < maxAttempts else { return nil }
    var delay = Double(initialBackoff)
    let cap = Double(maxBackoff)
    for _ in 1..<attempt where delay < cap {
      delay *= multiplier
    }
    delay = min(delay, cap)
    if jitter > 0 {
      delay *= 1 - jitter * StableHash.unitInterval(seed, salt: UInt64(attempt))
    }
    return Int64(delay.rounded(.down))
  }

  private enum CodingKeys: String, CodingKey {
    case maxAttempts, initialBackoff, multiplier, maxBackoff, jitter, attemptTimeout
  }

  /// Decodes the documented JSON shape; missing keys take the defaults; the result is validated.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    func duration(_ key: CodingKeys, _ field: String) throws -> Int64? {
      guard let text = try c.decodeIfPresent(String.self, forKey: key) else { return nil }
      return try DurationText.parse(text, field: "retry." + field)
    }
    let d = RetryPolicy.defaults
    self.init(
      uncheckedMaxAttempts: try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? d.maxAttempts,
      initialBackoff: try duration(.initialBackoff, "initial-backoff") ?? d.initialBackoff,
      multiplier: try c.decodeIfPresent(Double.self, forKey: .multiplier) ?? d.multiplier,
      maxBackoff: try duration(.maxBackoff, "max-backoff") ?? d.maxBackoff,
      jitter: try c.decodeIfPresent(Double.self, forKey: .jitter) ?? d.jitter,
      attemptTimeout: try duration(.attemptTimeout, "attempt-timeout"))
    try validate()
  }

  /// Encodes the documented JSON shape, durations in canonical text.
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(maxAttempts, forKey: .maxAttempts)
    try c.encode(DurationText.format(initialBackoff), forKey: .initialBackoff)
    try c.encode(multiplier, forKey: .multiplier)
    try c.encode(DurationText.format(maxBackoff), forKey: .maxBackoff)
    try c.encode(jitter, forKey: .jitter)
    if let attemptTimeout {
      try c.encode(DurationText.format(attemptTimeout), forKey: .attemptTimeout)
    }
  }
}
