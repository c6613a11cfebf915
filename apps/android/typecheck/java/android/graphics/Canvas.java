package android.graphics;
public class Canvas { public Canvas(Bitmap bitmap) {} public void drawCircle(float cx, float cy, float radius, Paint paint) {} }
