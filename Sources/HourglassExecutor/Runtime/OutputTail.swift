/// Keeps the last `capacity` bytes written to it: a ring buffer for a run's output.
///
/// A run may print gigabytes; the coordinator wants the end, where errors usually are.
struct OutputTail: Sendable {
  /// Most bytes kept.
  let capacity: Int
  private var storage: [UInt8] = []
  /// Where the next byte goes once `storage` is full.
  private var head = 0
  /// Bytes seen in all, kept or not.
  private(set) var totalBytes = 0

  init(capacity: Int) {
    precondition(capacity > 0, "an output tail needs room for at least one byte")
    self.capacity = capacity
    storage.reserveCapacity(min(capacity, 16 * 1024))
  }

  mutating func append(_ bytes: UnsafeRawBufferPointer) {
    totalBytes += bytes.count
    var slice = bytes[...]
    if slice.count >= capacity {
      // Only the last `capacity` bytes can survive.
      slice = slice.suffix(capacity)
      storage = Array(slice)
      head = 0
      return
    }
    for byte in slice {
      if storage.count < capacity {
        storage.append(byte)
      } else {
        storage[head] = byte
        head = (head + 1) % capacity
      }
    }
  }

  mutating func append(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { append($0) }
  }

  /// The kept bytes, oldest first.
  var bytes: [UInt8] {
    guard storage.count == capacity, head != 0 else { return storage }
    return Array(storage[head...] + storage[..<head])
  }
}
