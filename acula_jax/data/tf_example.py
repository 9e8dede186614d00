"""`tf.train.Example`, declared through protobuf's public API: the record payload of every dataset here.

The messages are those of TensorFlow's `example.proto` and `feature.proto` (same package, names,
field numbers and packing), so TensorFlow and the `tfrecord` package read what is written here and
the reverse. They are built from a descriptor in a pool of their own: TensorFlow is an optional extra,
and the `tfrecord` package's generated copy imports torch with it.
"""
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind, label=_F.LABEL_OPTIONAL, type_name: str = "", oneof=None):
  field = _F(name=name, number=number, type=kind, label=label)
  if type_name:
    field.type_name = type_name
  if oneof is not None:
    field.oneof_index = oneof
  return field


def _file() -> descriptor_pb2.FileDescriptorProto:
  proto = descriptor_pb2.FileDescriptorProto(name="acula_jax/tf_example.proto", package="tensorflow",
                                             syntax="proto3")
  for name, kind in (("BytesList", _F.TYPE_BYTES), ("FloatList", _F.TYPE_FLOAT), ("Int64List", _F.TYPE_INT64)):
    message = proto.message_type.add(name=name)
    message.field.append(_field("value", 1, kind, _F.LABEL_REPEATED))
    if kind != _F.TYPE_BYTES:
      message.field[0].options.packed = True
  feature = proto.message_type.add(name="Feature")
  feature.oneof_decl.add(name="kind")
  for number, (name, list_type) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                              ("int64_list", "Int64List")), start=1):
    feature.field.append(_field(name, number, _F.TYPE_MESSAGE, type_name=f".tensorflow.{list_type}", oneof=0))
  features = proto.message_type.add(name="Features")
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.extend([_field("key", 1, _F.TYPE_STRING),
                      _field("value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.Feature")])
  features.field.append(_field("feature", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED,
                               ".tensorflow.Features.FeatureEntry"))
  example = proto.message_type.add(name="Example")
  example.field.append(_field("features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features"))
  return proto


_CLASSES = message_factory.GetMessages([_file()], pool=descriptor_pool.DescriptorPool())

BytesList = _CLASSES["tensorflow.BytesList"]
FloatList = _CLASSES["tensorflow.FloatList"]
Int64List = _CLASSES["tensorflow.Int64List"]
Feature = _CLASSES["tensorflow.Feature"]
Features = _CLASSES["tensorflow.Features"]
Example = _CLASSES["tensorflow.Example"]
