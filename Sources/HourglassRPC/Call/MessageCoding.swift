import NIOCore
import SwiftProtobuf

/// Protobuf message (de)serialisation into and out of `ByteBuffer`s.
@usableFromInline
enum MessageCoding {
  @inlinable
  static func encode(_ message: some SwiftProtobuf.Message) throws(RPCError) -> ByteBuffer {
    do {
      let bytes: SerializedBytes = try message.serializedBytes()
      return bytes.buffer
    } catch {
      throw RPCError(code: .internal, message: "could not serialise \(type(of: message)): \(error)", cause: error)
    }
  }

  @inlinable
  static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, from buffer: ByteBuffer) throws(RPCError) -> M {
    do {
      return try M(serializedBytes: buffer.readableBytesSpan)
    } catch {
      throw RPCError(code: .invalidArgument, message: "could not parse \(M.protoMessageName): \(error)", cause: error)
    }
  }
}

/// A `ByteBuffer` swift-protobuf serialises into directly, instead of into an array that is
/// then copied into a buffer.
@usableFromInline
struct SerializedBytes: SwiftProtobufContiguousBytes {
  @usableFromInline
  var buffer: ByteBuffer

  @inlinable
  init(repeating: UInt8, count: Int) {
    // Filled through one pointer: `ByteBuffer(repeating:count:)` checks capacity and access
    // again for the fill.
    buffer = ByteBufferAllocator().buffer(capacity: count)
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { bytes in
      bytes.baseAddress?.initializeMemory(as: UInt8.self, repeating: repeating, count: count)
      return count
    }
  }

  @inlinable
  init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
    buffer = ByteBuffer(bytes: sequence)
  }

  @inlinable
  var count: Int { buffer.readableBytes }

  @inlinable
  func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try buffer.withUnsafeReadableBytes(body)
  }

  @inlinable
  mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    try buffer.withUnsafeMutableReadableBytes(body)
  }
}
