package android.widget;
public class TextView extends android.view.View {
  public TextView(android.content.Context c) { super(c); }
  public final void setText(CharSequence text) {}
  public CharSequence getText() { return null; }
}
