package android.graphics;
public class RectF { public float left, top, right, bottom; }
