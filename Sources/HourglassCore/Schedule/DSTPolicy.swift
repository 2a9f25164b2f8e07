/// What a wall-clock schedule does when a daylight-saving (or any offset) transition makes a wall
/// time not exist, or exist twice.
///
/// Set per schedule. It applies to cron schedules and to one-shot schedules given as a local
/// date-time; intervals and RFC 3339 instants are absolute and never affected.
public struct DSTPolicy: Sendable, Hashable, Codable {
  /// A wall time skipped by a forward transition (spring forward: 02:30 in New York on the second
  /// Sunday of March).
  public enum Gap: String, Sendable, Hashable, Codable, CaseIterable {
    /// Run at the first instant after the gap (the transition itself, e.g. 03:00 EDT), once, even
    /// if several wanted times fell in the gap. What cronie does. The default.
    case runAfter = "run-after"
    /// Do not run for wall times inside the gap.
    case skip
  }

  /// A wall time that occurs twice because of a backward transition (fall back: 01:30 in New York
  /// on the first Sunday of November happens in EDT and again in EST).
  public enum Overlap: String, Sendable, Hashable, Codable, CaseIterable {
    /// Run once, at the first occurrence. The default.
    case once
    /// Run at both occurrences.
    case both
  }

  /// Policy for wall times in a gap.
  public var gap: Gap
  /// Policy for wall times in an overlap.
  public var overlap: Overlap

  /// Creates a policy; the defaults are `run-after` and `once`.
  public init(gap: Gap = .runAfter, overlap: Overlap = .once) {
    self.gap = gap
    self.overlap = overlap
  }

  /// `run-after` and `once`.
  public static let defaults = DSTPolicy()

  private enum CodingKeys: String, CodingKey { case gap, overlap }

  /// Decodes `{"gap": "run-after"|"skip", "overlap": "once"|"both"}`; missing keys take the defaults.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    gap = try c.decodeIfPresent(Gap.self, forKey: .gap) ?? .runAfter
    overlap = try c.decodeIfPresent(Overlap.self, forKey: .overlap) ?? .once
  }
}
