/// Idempotency keys minted by Hourglass's own clients when the caller gives none.
///
/// A key only has to be unique per owner; the store keeps every claimed key in an index ordered
/// by (owner, key). Random keys (UUIDv4) land on a random page of that index, so each key in a
/// group commit dirties — and writes to the WAL — a page of its own. Keys that grow with time land
/// at the end of the index, where a whole batch shares a few pages. A version-7 UUID does that
/// (48-bit milliseconds first) while staying an ordinary UUID to anyone reading it.
public enum IdempotencyKey {
  /// A fresh key: the canonical lowercase text of a version-7 UUID for the current time.
  public static func generate() -> String {
    TaskID.now().description
  }
}
