import Foundation

/// The UTC-offset history of one IANA time zone, as a sorted table of transitions.
///
/// Built once per zone and process from Foundation's `TimeZone` (which reads the system's tz
/// database) and shared by every schedule in that zone. Looking up an offset, or resolving a wall
/// time to instants, is then a binary search over plain integers: no `Calendar`, no allocation,
/// no lock. Outside the tabulated years (before 1900 or from 2400 on) the rules fall back to asking
/// `TimeZone` directly, which is slower but still exact.
public final class ZoneRules: Sendable {
  /// The IANA identifier, e.g. `America/New_York`.
  public let identifier: String
  /// The Foundation zone the table was built from.
  public let timeZone: TimeZone

  /// UTC seconds of each transition, ascending.
  let transitions: [Int64]
  /// `offsets[i]` is the offset (seconds east of UTC) in force from `transitions[i - 1]` up to
  /// `transitions[i]`; `offsets[0]` is the offset before the first transition and
  /// `offsets[transitions.count]` the one after the last. Always `transitions.count + 1` long.
  let offsets: [Int32]
  /// For each transition, the smaller of the wall times just before and just after it
  /// (`t + min(before, after)`): where its gap or overlap begins on the wall clock. Ascending.
  let localStarts: [Int64]

  /// First and last UTC second the table is authoritative for.
  let tableStart: Int64
  let tableEnd: Int64
  /// The first transition at or after `tableEnd` (UTC seconds) and the offset after it, or
  /// `Int64.max` and the last offset if Foundation knows of none: the end of the last segment.
  let nextAfterTable: (time: Int64, offset: Int64)

  static let defaultTableStart: Int64 = -2_208_988_800  // 1900-01-01T00:00:00Z
  static let defaultTableEnd: Int64 = 13_569_465_600  // 2400-01-01T00:00:00Z

  /// The shared rules for `identifier`, or a validation error naming the `time-zone` field.
  ///
  /// Accepts IANA names (and the aliases Foundation knows, such as `UTC`). Tables are cached per
  /// process, so calling this for every schedule is cheap after the first time.
  public static func named(_ identifier: String) throws(ScheduleValidationError) -> ZoneRules {
    if let cached = cache.withLock({ $0[identifier] }) { return cached }
    guard !identifier.isEmpty, let zone = TimeZone(identifier: identifier) else {
      throw ScheduleValidationError(
        field: "time-zone", reason: "unknown IANA time zone \"\(identifier)\"")
    }
    let rules = ZoneRules(identifier: identifier, timeZone: zone)
    return cache.withLock { table in
      if let existing = table[identifier] { return existing }
      table[identifier] = rules
      return rules
    }
  }

  /// UTC, with no transitions.
  public static let utc: ZoneRules = try! named("UTC")

  private static let cache = LockedTable()

  init(
    identifier: String, timeZone: TimeZone, from start: Int64 = defaultTableStart,
    to end: Int64 = defaultTableEnd
  ) {
    self.identifier = identifier
    self.timeZone = timeZone
    var transitions: [Int64] = []
    var offsets: [Int32] = [
      Int32(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(start))))
    ]
    var cursor = Date(timeIntervalSince1970: Double(start))
    var beyond: (time: Int64, offset: Int64)? = nil
    while let next = timeZone.nextDaylightSavingTimeTransition(after: cursor) {
      let t = Int64(next.timeIntervalSince1970.rounded())
      guard t > (transitions.last ?? Int64.min), t > Int64(cursor.timeIntervalSince1970) else {
        break
      }
      let after = Int32(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t))))
      if after != offsets[offsets.count - 1] {
        if t >= end {
          beyond = (t, Int64(after))
          break
        }
        transitions.append(t)
        offsets.append(after)
      }
      cursor = Date(timeIntervalSince1970: Double(t))
    }
    self.nextAfterTable = beyond ?? (Int64.max, Int64(offsets[offsets.count - 1]))
    var localStarts: [Int64] = []
    localStarts.reserveCapacity(transitions.count)
    for (i, t) in transitions.enumerated() {
      localStarts.append(t + Int64(min(offsets[i], offsets[i + 1])))
    }
    self.transitions = transitions
    self.offsets = offsets
    self.localStarts = localStarts
    self.tableStart = start
    self.tableEnd = end
  }

  /// A stretch of UTC time with one offset, and what lies at either end of it.
  struct Segment {
    /// Offset in force, seconds east of UTC.
    var offset: Int64
    /// Transition that starts the segment (UTC seconds), or `Int64.min` if none is known.
    var start: Int64
    /// Offset before `start`.
    var previousOffset: Int64
    /// Transition that ends the segment (UTC seconds), or `Int64.max`.
    var end: Int64
    /// Offset after `end`.
    var nextOffset: Int64
  }

  /// The segment containing UTC second `utc`.
  @inline(__always)
  func segment(containing utc: Int64) -> Segment {
    if utc >= tableStart && utc < tableEnd {
      // Number of transitions <= utc.
      var lo = 0
      var hi = transitions.count
      while lo < hi {
        let mid = (lo &+ hi) >> 1
        if transitions[mid] <= utc { lo = mid + 1 } else { hi = mid }
      }
      let offset = Int64(offsets[lo])
      let start = lo > 0 ? transitions[lo - 1] : Int64.min
      let previous = lo > 0 ? Int64(offsets[lo - 1]) : offset
      if lo < transitions.count {
        return Segment(
          offset: offset, start: start, previousOffset: previous, end: transitions[lo],
          nextOffset: Int64(offsets[lo + 1]))
      }
      // After the last tabulated transition: the segment runs to the first one beyond the table.
      return Segment(
        offset: offset, start: start, previousOffset: previous, end: nextAfterTable.time,
        nextOffset: nextAfterTable.offset)
    }
    return slowSegment(containing: utc)
  }

  /// Offset in seconds east of UTC at UTC second `utc`.
  @inline(__always)
  func offset(atUTC utc: Int64) -> Int64 {
    if utc >= tableStart && utc < tableEnd {
      var lo = 0
      var hi = transitions.count
      while lo < hi {
        let mid = (lo &+ hi) >> 1
        if transitions[mid] <= utc { lo = mid + 1 } else { hi = mid }
      }
      return Int64(offsets[lo])
    }
    return Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(utc))))
  }

  /// Offset in seconds east of UTC at an instant given in UTC microseconds.
  public func offset(atMicros micros: Int64) -> Int {
    Int(offset(atUTC: CivilTime.floorDiv(micros, 1_000_000)))
  }

  private func nextTransitionFromFoundation(after utc: Int64) -> (time: Int64, offset: Int64)? {
    var cursor = Date(timeIntervalSince1970: Double(utc))
    let current = timeZone.secondsFromGMT(for: cursor)
    for _ in 0..<8 {
      guard let next = timeZone.nextDaylightSavingTimeTransition(after: cursor) else { return nil }
      let t = Int64(next.timeIntervalSince1970.rounded())
      let after = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(t)))
      if after != current { return (t, Int64(after)) }
      cursor = Date(timeIntervalSince1970: Double(t))
    }
    return nil
  }

  private func slowSegment(containing utc: Int64) -> Segment {
    let offset = Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(utc))))
    var segment = Segment(
      offset: offset, start: Int64.min, previousOffset: offset, end: Int64.max, nextOffset: offset)
    if let next = nextTransitionFromFoundation(after: utc) {
      segment.end = next.time
      segment.nextOffset = next.offset
    }
    // Find the transition that started this segment by stepping back; zones change at most a few
    // times a year, so a year's look-back with Foundation is enough to learn the previous offset.
    var probe = utc - 400 * 86_400
    while probe < utc, let next = nextTransitionFromFoundation(after: probe), next.time <= utc {
      segment.start = next.time
      segment.previousOffset = Int64(
        timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(next.time - 1))))
      probe = next.time
    }
    return segment
  }

  /// How a wall-clock time maps onto instants in this zone.
  enum LocalResolution: Equatable {
    /// Exactly one instant (UTC seconds).
    case unique(Int64)
    /// The wall time was skipped by a forward transition at UTC second `transition`.
    case gap(transition: Int64)
    /// The wall time occurred twice: first at `first`, again at `second` (UTC seconds).
    case overlap(first: Int64, second: Int64)
  }

  /// Resolves civil seconds (a wall time) in this zone.
  func resolve(local: Int64) -> LocalResolution {
    if local - 86_400 >= tableStart && local + 86_400 < tableEnd {
      // The last transition whose wall-clock effect starts at or before `local`.
      var lo = 0
      var hi = localStarts.count
      while lo < hi {
        let mid = (lo &+ hi) >> 1
        if localStarts[mid] <= local { lo = mid + 1 } else { hi = mid }
      }
      let i = lo - 1
      if i < 0 { return .unique(local - Int64(offsets[0])) }
      let t = transitions[i]
      let before = Int64(offsets[i])
      let after = Int64(offsets[i + 1])
      if local < t + max(before, after) {
        if after > before { return .gap(transition: t) }
        return .overlap(first: local - before, second: local - after)
      }
      return .unique(local - after)
    }
    // Outside the table: try the offsets around the wall time.
    let guess1 = offset(atUTC: local - 86_400)
    let guess2 = offset(atUTC: local + 86_400)
    var found: [Int64] = []
    for o in [guess1, guess2] where offset(atUTC: local - o) == o && !found.contains(local - o) {
      found.append(local - o)
    }
    found.sort()
    if found.count == 2 { return .overlap(first: found[0], second: found[1]) }
    if found.count == 1 { return .unique(found[0]) }
    return .gap(transition: segment(containing: local - max(guess1, guess2)).end)
  }
}

/// A lock-protected dictionary of zone tables (ZoneRules is immutable once built).
private final class LockedTable: @unchecked Sendable {
  private let lock = NSLock()
  private var table: [String: ZoneRules] = [:]

  func withLock<R>(_ body: (inout [String: ZoneRules]) -> R) -> R {
    lock.lock()
    defer { lock.unlock() }
    return body(&table)
  }
}
