package org.tensorflow.lite;
public interface Tensor {
  class QuantizationParams { public float getScale() { return 0; } public int getZeroPoint() { return 0; } }
  DataType dataType(); int numBytes(); int numElements(); int[] shape(); QuantizationParams quantizationParams();
}
