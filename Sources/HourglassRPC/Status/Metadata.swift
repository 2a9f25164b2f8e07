/// Call metadata: an ordered list of key-value pairs sent with the request headers, the
/// response headers or the trailers.
///
/// Keys are lowercase ASCII. A key ending in `-bin` carries bytes; any other key carries text.
/// Keys beginning with `hg-` are reserved for the protocol itself.
public struct Metadata: Hashable, Sendable, ExpressibleByDictionaryLiteral, Sequence {
  public typealias Key = String
  public typealias Value = String

  /// The pairs, in the order they were added.
  public private(set) var entries: [(key: String, value: MetadataValue)]

  /// Empty metadata.
  public init() { entries = [] }

  public init(dictionaryLiteral elements: (String, String)...) {
    entries = elements.map { (key: $0.0.lowercased(), value: .text($0.1)) }
  }

  /// Adds a text value under `key` (lower-cased), keeping any existing ones.
  public mutating func add(_ key: String, _ value: String) {
    entries.append((key: key.lowercased(), value: .text(value)))
  }

  /// Adds a binary value under `key`, which must end in `-bin`.
  public mutating func add(_ key: String, bytes: [UInt8]) {
    entries.append((key: key.lowercased(), value: .binary(bytes)))
  }

  /// Adds a value already typed.
  public mutating func add(_ key: String, value: MetadataValue) {
    entries.append((key: key.lowercased(), value: value))
  }

  /// The first text value under `key`, if any.
  public subscript(text key: String) -> String? {
    let key = key.lowercased()
    for entry in entries where entry.key == key {
      if case .text(let text) = entry.value { return text }
    }
    return nil
  }

  /// Removes every value under `key`.
  public mutating func removeAll(_ key: String) {
    let key = key.lowercased()
    entries.removeAll { $0.key == key }
  }

  /// Whether there are no pairs.
  public var isEmpty: Bool { entries.isEmpty }

  /// The number of pairs.
  public var count: Int { entries.count }

  public func makeIterator() -> IndexingIterator<[(key: String, value: MetadataValue)]> {
    entries.makeIterator()
  }

  public static func == (lhs: Metadata, rhs: Metadata) -> Bool {
    lhs.entries.count == rhs.entries.count
      && zip(lhs.entries, rhs.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(entries.count)
    for entry in entries {
      hasher.combine(entry.key)
      hasher.combine(entry.value)
    }
  }
}

/// One metadata value: text or bytes.
public enum MetadataValue: Hashable, Sendable, CustomStringConvertible {
  /// A UTF-8 value (any key not ending in `-bin`).
  case text(String)
  /// A binary value (keys ending in `-bin`).
  case binary([UInt8])

  public var description: String {
    switch self {
    case .text(let text): text
    case .binary(let bytes): "<\(bytes.count) bytes>"
    }
  }
}
