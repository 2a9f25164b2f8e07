/// Gathers one page of records read in order, stopping at a count or at a size, so that a store
/// reading rows one at a time never decodes or holds more than one page (and one row).
///
/// A store asks the database for `limit + 1` rows and offers them in order to
/// ``take(decoding:)`` until it answers false. The page is then ``records``, and ``hasMore`` says whether a record was left
/// for the next page: the row past `limit`, or the first that would have taken the page past
/// `maxBytes`. A page always holds its first record, however large, so paging never stalls.
public struct PageBuilder<Record> {
  /// The most records in a page (at least 1).
  public let limit: Int
  /// The most bytes in a page, by `size`; nil for no bound.
  public let maxBytes: Int?
  private let size: (Record) -> Int
  /// The page so far, in the order offered.
  public private(set) var records: [Record] = []
  /// True once a record was refused: more follow this page.
  public private(set) var hasMore = false
  private var bytes = 0

  /// A page of at most `limit` records and `maxBytes` bytes, each record weighing `size`.
  public init(limit: Int, maxBytes: Int?, size: @escaping (Record) -> Int) {
    self.limit = limit
    self.maxBytes = maxBytes
    self.size = size
  }

  /// Takes the next record, made by `decode`, into the page; false, not taking it, when the
  /// page is full (stop reading then: the record and those after it belong to the next page).
  /// A row past `limit` is not decoded at all: that it exists is all the page needs.
  public mutating func take(decoding decode: () throws -> Record) rethrows -> Bool {
    guard !hasMore else { return false }
    guard records.count < limit else {
      hasMore = true
      return false
    }
    let record = try decode()
    let weight = size(record)
    if let maxBytes, !records.isEmpty, bytes + weight > maxBytes {
      hasMore = true
      return false
    }
    records.append(record)
    bytes += weight
    return true
  }

  /// Notes that records follow those offered: the database cut the page itself (by a size it
  /// counts on its side) before this builder refused any.
  public mutating func noteMoreFollow() {
    hasMore = true
  }
}

extension TaskRecord {
  /// An upper estimate of the bytes this task takes in a listing (its name, arguments and
  /// schedule, plus room for the fixed fields): what ``TaskListQuery/maxBytes`` counts.
  public var listingBytes: Int {
    512 + name.utf8.count + timeZone.utf8.count + scheduleSpec.count + arguments.reduce(0) { $0 + $1.utf8.count + 4 }
  }
}

extension RunRecord {
  /// An upper estimate of the bytes this run takes in a listing (its output tail, error and
  /// lease owner, plus room for the fixed fields): what a run page's `maxBytes` counts.
  public var listingBytes: Int {
    512 + outputTail.count + (error?.utf8.count ?? 0) + (leaseOwner?.utf8.count ?? 0)
  }
}
