package android.graphics;
public class Matrix { public Matrix() {} public boolean invert(Matrix inverse) { return false; } public void mapPoints(float[] pts) {} }
