/** Small DOM builders shared by the widget view and the switch dialog. */

export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

export function option(value: string, text: string): HTMLOptionElement {
  const node = document.createElement('option');
  node.value = value;
  node.textContent = text;
  return node;
}

/** A control with its caption, as one clickable label. */
export function field(text: string, control: HTMLElement): HTMLLabelElement {
  const node = element('label', 'jp-tfenv-field');
  const caption = element('span', 'jp-tfenv-field-label');
  caption.textContent = text;
  node.append(caption, control);
  return node;
}
