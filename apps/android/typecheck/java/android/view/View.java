package android.view;
public class View {
  public static final int VISIBLE = 0; public static final int GONE = 8;
  public View(android.content.Context context) {}
  public interface OnTouchListener { boolean onTouch(View v, MotionEvent event); }
  public interface OnClickListener { void onClick(View v); }
  public void setOnTouchListener(OnTouchListener l) {}
  public void setOnClickListener(OnClickListener l) {}
  public void setVisibility(int visibility) {}
  public int getVisibility() { return 0; }
  public int getPaddingLeft() { return 0; }
  public int getPaddingTop() { return 0; }
  public void setId(int id) {}
  public int getId() { return 0; }
}
