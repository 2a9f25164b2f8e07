/// The open streams of one connection, by stream id: an open-addressing hash table with
/// linear probing, for the few lookups every call makes on the event loop.
///
/// A `Dictionary` hashes each `UInt32` id with SipHash (a per-process seed guards it against
/// crafted keys); here an id is spread with one multiplication instead. A peer choosing ids
/// that collide gains nothing: it can open at most `max_concurrent_streams` streams, so a
/// probe never scans more than that many slots, and the table keeps at least half its slots
/// empty.
///
/// A value type like `Dictionary` (its storage is copied on write), so iterating over it
/// while streams are removed iterates over the streams as they were.
struct StreamTable<Value: AnyObject>: Sequence {
  /// Stream 0 is the connection itself, never a stream: it marks an empty slot.
  private var ids: [UInt32]
  private var values: [Value?]
  private(set) var count = 0

  init() {
    ids = Array(repeating: 0, count: 16)
    values = Array(repeating: nil, count: 16)
  }

  var isEmpty: Bool { count == 0 }

  private var mask: Int { ids.count - 1 }

  /// The slot where a probe for `id` starts.
  @inline(__always)
  private func home(_ id: UInt32) -> Int {
    // Fibonacci hashing: the high bits of the product are the well-mixed ones.
    Int(truncatingIfNeeded: (UInt64(id) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
  }

  /// The slot holding `id`, or `nil`.
  private func slot(of id: UInt32) -> Int? {
    guard id != 0 else { return nil }
    var index = home(id)
    while true {
      let found = ids[index]
      if found == id { return index }
      if found == 0 { return nil }
      index = (index + 1) & mask
    }
  }

  subscript(id: UInt32) -> Value? {
    get { slot(of: id).flatMap { values[$0] } }
    set {
      if let newValue {
        insert(id, newValue)
      } else {
        removeValue(forKey: id)
      }
    }
  }

  private mutating func insert(_ id: UInt32, _ value: Value) {
    precondition(id != 0, "stream 0 is not a stream")
    if let existing = slot(of: id) {
      values[existing] = value
      return
    }
    if (count + 1) * 2 > ids.count { grow() }
    var index = home(id)
    while ids[index] != 0 { index = (index + 1) & mask }
    ids[index] = id
    values[index] = value
    count += 1
  }

  @discardableResult
  mutating func removeValue(forKey id: UInt32) -> Value? {
    guard var hole = slot(of: id) else { return nil }
    let removed = values[hole]
    ids[hole] = 0
    values[hole] = nil
    count -= 1
    // Shift later entries of the same probe run back into the hole, so that no probe stops
    // early at it (deletion without tombstones).
    var index = (hole + 1) & mask
    while ids[index] != 0 {
      let wanted = home(ids[index])
      // Move the entry when its home is not cyclically within (hole, index].
      let distanceToEntry = (index - wanted) & mask
      let distanceToHole = (index - hole) & mask
      if distanceToEntry >= distanceToHole {
        ids[hole] = ids[index]
        values[hole] = values[index]
        ids[index] = 0
        values[index] = nil
        hole = index
      }
      index = (index + 1) & mask
    }
    return removed
  }

  mutating func removeAll() {
    guard count > 0 else { return }
    for index in ids.indices {
      ids[index] = 0
      values[index] = nil
    }
    count = 0
  }

  private mutating func grow() {
    let oldIDs = ids
    let oldValues = values
    ids = Array(repeating: 0, count: oldIDs.count * 2)
    values = Array(repeating: nil, count: oldIDs.count * 2)
    count = 0
    for (index, id) in oldIDs.enumerated() where id != 0 {
      insert(id, oldValues[index]!)
    }
  }

  func makeIterator() -> Iterator { Iterator(table: self) }

  /// The streams, in no particular order.
  struct Iterator: IteratorProtocol {
    let table: StreamTable
    var index = 0

    mutating func next() -> (UInt32, Value)? {
      while index < table.ids.count {
        defer { index += 1 }
        if table.ids[index] != 0, let value = table.values[index] { return (table.ids[index], value) }
      }
      return nil
    }
  }
}
