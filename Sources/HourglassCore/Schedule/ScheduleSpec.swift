/// The stored, user-facing description of when a task runs: what the task store persists (as JSON)
/// and what ``Schedule`` compiles into something that computes fire times.
///
/// A spec is plain data; ``validate()`` (or ``Schedule/init(_:jitterSeed:)``) checks it and names
/// the field at fault. Its JSON shape is stable and documented in `docs/schedules.md`:
///
/// ```json
/// {"kind": "cron", "cron": "*/5 * * * *", "timeZone": "America/New_York",
///  "start": "2026-01-01T00:00:00Z", "end": null, "maxRuns": null, "jitter": "0s",
///  "dst": {"gap": "run-after", "overlap": "once"},
///  "misfire": {"policy": "run-once", "limit": 100, "grace": "1m"}, "overlap": "skip"}
/// ```
///
/// `kind` is a string tag (`once`, `cron`, `interval`); keys a decoder does not know are ignored,
/// so newer writers can add fields without breaking older readers; missing optional keys take
/// their defaults. Encoding then decoding gives back an equal value.
public struct ScheduleSpec: Sendable, Hashable, Codable {
  /// When a one-shot schedule fires.
  public enum OnceTime: Sendable, Hashable {
    /// An exact instant (UTC microseconds); from an RFC 3339 string with `Z` or an offset.
    case instant(Int64)
    /// A wall-clock date-time in the spec's ``ScheduleSpec/timeZone``; DST policy applies.
    case local(LocalDateTime)
  }

  /// The kind of schedule, with what defines it.
  public enum Kind: Sendable, Hashable {
    /// Fire once.
    case once(OnceTime)
    /// Fire whenever the wall clock in the spec's zone matches the cron expression (as written).
    case cron(String)
    /// Fire every `every` microseconds, at `anchor + k × every` for whole `k` (`anchor` in UTC
    /// microseconds). Elapsed time: unaffected by zones and DST.
    case interval(every: Int64, anchor: Int64)

    /// The JSON tag: `once`, `cron` or `interval`.
    public var tag: String {
      switch self {
      case .once: return "once"
      case .cron: return "cron"
      case .interval: return "interval"
      }
    }
  }

  /// What kind of schedule this is.
  public var kind: Kind
  /// IANA zone for wall-clock kinds (cron, local one-shot) and for display. Default `UTC`.
  public var timeZone: String
  /// No run fires before this instant (UTC microseconds), if set.
  public var start: Int64?
  /// No run fires at or after this instant (UTC microseconds), if set.
  public var end: Int64?
  /// The schedule ends after this many runs have been started, if set (≥ 1).
  public var maxRuns: Int?
  /// Upper bound of the deterministic per-task delay, in microseconds (0 = none; recurring kinds
  /// only; at most one day).
  public var jitter: Int64
  /// What wall-clock kinds do at DST gaps and overlaps.
  public var dst: DSTPolicy
  /// What happens to runs that came due while nothing was running.
  public var misfire: MisfirePolicy
  /// What a recurring task does when a run comes due while the previous one is still going.
  public var overlap: OverlapPolicy

  /// Creates a spec; every field but the kind has a default.
  public init(
    _ kind: Kind, timeZone: String = "UTC", start: Int64? = nil, end: Int64? = nil,
    maxRuns: Int? = nil,
    jitter: Int64 = 0, dst: DSTPolicy = .defaults, misfire: MisfirePolicy = .defaults,
    overlap: OverlapPolicy = .defaults
  ) {
    self.kind = kind
    self.timeZone = timeZone
    self.start = start
    self.end = end
    self.maxRuns = maxRuns
    self.jitter = jitter
    self.dst = dst
    self.misfire = misfire
    self.overlap = overlap
  }

  /// A cron schedule in `timeZone`.
  public static func cron(_ expression: String, timeZone: String = "UTC") -> ScheduleSpec {
    ScheduleSpec(.cron(expression), timeZone: timeZone)
  }

  /// An interval schedule: every `every` microseconds from `anchor` (default the Unix epoch, so
  /// `every 15m` fires on the quarter hours of UTC).
  public static func interval(every: Int64, anchor: Int64 = 0) -> ScheduleSpec {
    ScheduleSpec(.interval(every: every, anchor: anchor))
  }

  /// A one-shot schedule at an instant.
  public static func once(at instant: Int64) -> ScheduleSpec {
    ScheduleSpec(.once(.instant(instant)))
  }

  /// A one-shot schedule at a wall-clock time in `timeZone`.
  public static func once(at local: LocalDateTime, timeZone: String) -> ScheduleSpec {
    ScheduleSpec(.once(.local(local)), timeZone: timeZone)
  }

  /// Whether the kind recurs (cron and interval) rather than firing once.
  public var isRecurring: Bool {
    if case .once = kind { return false }
    return true
  }

  /// Checks the whole spec; throws an error naming the first field at fault.
  public func validate() throws(ScheduleValidationError) {
    _ = try Schedule(self)
  }

  // MARK: Codable

  private enum CodingKeys: String, CodingKey {
    case kind, cron, at, every, anchor, timeZone, start, end, maxRuns, jitter, dst, misfire, overlap
  }

  /// Decodes the documented JSON shape. Unknown keys are ignored; an unknown `kind` is an error.
  /// Values are parsed but not cross-checked: call ``validate()`` or build a ``Schedule``.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let tag = try c.decode(String.self, forKey: .kind)
    func fail(_ error: ScheduleValidationError, _ key: CodingKeys) -> DecodingError {
      DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: error.description)
    }
    func instant(_ key: CodingKeys, _ field: String) throws -> Int64? {
      guard let text = try c.decodeIfPresent(String.self, forKey: key) else { return nil }
      do { return try RFC3339.parseInstant(text, field: field) } catch { throw fail(error, key) }
    }
    switch tag {
    case "once":
      let text = try c.decode(String.self, forKey: .at)
      do {
        switch try RFC3339.parse(text, field: "at") {
        case .instant(let micros): kind = .once(.instant(micros))
        case .local(let local): kind = .once(.local(local))
        }
      } catch {
        throw fail(error, .at)
      }
    case "cron":
      kind = .cron(try c.decode(String.self, forKey: .cron))
    case "interval":
      let text = try c.decode(String.self, forKey: .every)
      let every: Int64
      do { every = try DurationText.parse(text, field: "every") } catch {
        throw fail(error, .every)
      }
      kind = .interval(every: every, anchor: try instant(.anchor, "anchor") ?? 0)
    default:
      throw DecodingError.dataCorruptedError(
        forKey: .kind, in: c,
        debugDescription: "kind: unknown schedule kind \"\(tag)\" (expected once, cron or interval)"
      )
    }
    timeZone = try c.decodeIfPresent(String.self, forKey: .timeZone) ?? "UTC"
    start = try instant(.start, "start")
    end = try instant(.end, "end")
    maxRuns = try c.decodeIfPresent(Int.self, forKey: .maxRuns)
    if let text = try c.decodeIfPresent(String.self, forKey: .jitter) {
      do { jitter = try DurationText.parse(text, field: "jitter") } catch {
        throw fail(error, .jitter)
      }
    } else {
      jitter = 0
    }
    dst = try c.decodeIfPresent(DSTPolicy.self, forKey: .dst) ?? .defaults
    misfire = try c.decodeIfPresent(MisfirePolicy.self, forKey: .misfire) ?? .defaults
    overlap = try c.decodeIfPresent(OverlapPolicy.self, forKey: .overlap) ?? .defaults
  }

  /// Encodes the documented JSON shape, writing every field (defaults included, `null` for unset
  /// optional ones) so a stored schedule is explicit.
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(kind.tag, forKey: .kind)
    switch kind {
    case .once(.instant(let micros)):
      try c.encode(RFC3339.formatUTC(micros: micros), forKey: .at)
    case .once(.local(let local)):
      try c.encode(local.description, forKey: .at)
    case .cron(let expression):
      try c.encode(expression, forKey: .cron)
    case .interval(let every, let anchor):
      try c.encode(DurationText.format(every), forKey: .every)
      try c.encode(RFC3339.formatUTC(micros: anchor), forKey: .anchor)
    }
    try c.encode(timeZone, forKey: .timeZone)
    try c.encode(start.map { RFC3339.formatUTC(micros: $0) }, forKey: .start)
    try c.encode(end.map { RFC3339.formatUTC(micros: $0) }, forKey: .end)
    try c.encode(maxRuns, forKey: .maxRuns)
    try c.encode(DurationText.format(jitter), forKey: .jitter)
    try c.encode(dst, forKey: .dst)
    try c.encode(misfire, forKey: .misfire)
    try c.encode(overlap, forKey: .overlap)
  }
}
