/// What to do with runs that came due while nothing was running (the coordinator was down, the
/// task's shard had no owner, the store was unreachable).
///
/// A due run is *on time* if it is at most ``grace`` old when the scheduler gets to it; only runs
/// older than that are misfires. ``Schedule/misfire(after:now:runsSoFar:)`` applies the policy.
///
/// JSON: `{"policy": "run-once", "grace": "1m"}`, `{"policy": "run-all", "limit": 10, "grace":
/// "1m"}`, `{"policy": "skip", "grace": "1m"}`; `limit` and `grace` optional.
public struct MisfirePolicy: Sendable, Hashable, Codable {
  /// The three policies.
  public enum Mode: String, Sendable, Hashable, Codable, CaseIterable {
    /// Start one catch-up run now (for the most recent missed time); count the others as skipped.
    /// The default.
    case runOnce = "run-once"
    /// Start every missed run, oldest first, but at most ``MisfirePolicy/limit`` of them (the most
    /// recent ones); count the rest as skipped.
    case runAll = "run-all"
    /// Start none of the missed runs (a run still within the grace period is not missed and does
    /// start); go on to the next future time.
    case skip
  }

  /// Which policy.
  public var mode: Mode
  /// For `run-all`: the most runs started at once, 1–1000. Ignored by the other modes.
  public var limit: Int
  /// How late a run may start and still count as on time, in microseconds (default one minute).
  public var grace: Int64

  /// The default: `run-once` with a one-minute grace.
  public static let defaults = MisfirePolicy(uncheckedMode: .runOnce, limit: 100, grace: 60_000_000)

  /// Creates a policy, validating the limit and grace.
  public init(
    _ mode: Mode = .runOnce, limit: Int = 100, grace: Int64 = 60_000_000
  )
    throws(ScheduleValidationError)
  {
    self.init(uncheckedMode: mode, limit: limit, grace: grace)
    try validate()
  }

  private init(uncheckedMode mode: Mode, limit: Int, grace: Int64) {
    self.mode = mode
    self.limit = limit
    self.grace = grace
  }

  /// `run-once`, with the default grace.
  public static let runOnce = defaults
  /// `skip`, with the default grace.
  public static let skip = MisfirePolicy(uncheckedMode: .skip, limit: 100, grace: 60_000_000)
  /// `run-all` with `limit`, with the default grace.
  public static func runAll(limit: Int) throws(ScheduleValidationError) -> MisfirePolicy {
    try MisfirePolicy(.runAll, limit: limit)
  }

  /// Checks the limit (1–1000) and grace (0–1 day).
  public func validate() throws(ScheduleValidationError) {
    guard (1...1000).contains(limit) else {
      throw ScheduleValidationError(field: "misfire.limit", reason: "\(limit) out of range 1-1000")
    }
    guard grace >= 0, grace <= 86_400_000_000 else {
      throw ScheduleValidationError(
        field: "misfire.grace", reason: "\(DurationText.format(grace)) out of range 0s-1d")
    }
  }

  private enum CodingKeys: String, CodingKey { case policy, limit, grace }

  /// Decodes the documented JSON shape; missing keys take the defaults.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = MisfirePolicy.defaults
    var grace = d.grace
    if let text = try c.decodeIfPresent(String.self, forKey: .grace) {
      grace = try DurationText.parse(text, field: "misfire.grace")
    }
    self.init(
      uncheckedMode: try c.decodeIfPresent(Mode.self, forKey: .policy) ?? d.mode,
      limit: try c.decodeIfPresent(Int.self, forKey: .limit) ?? d.limit,
      grace: grace)
    try validate()
  }

  /// Encodes the documented JSON shape (every key, so stored policies are explicit).
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(mode, forKey: .policy)
    try c.encode(limit, forKey: .limit)
    try c.encode(DurationText.format(grace), forKey: .grace)
  }
}
