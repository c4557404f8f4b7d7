r"""Lay rows of titled images out as one picture.

A picture is a caption band on top, a column of row labels on the left and
one tile per image: a title band over the image, resized into a fixed cell
(aspect kept), with its grid lines and boxes drawn by
``torchvision.utils.draw_bounding_boxes``. The tiles are arranged by
``torchvision.utils.make_grid``; text is drawn with PIL (matplotlib's
DejaVu Sans when available). torchvision and PIL are imported when
drawing, so ``import mixplugins`` does not need them.
"""
import colorsys
import functools
import os.path as osp
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'Box', 'Cell', 'Rows', 'tint_outside', 'colour_palette', 'text_tile',
    'cell_size', 'figure_size', 'draw_rows'
]

#: Layout, in pixels: the caption band on top, the row labels on the left,
#: the title band above every image, the gap between tiles.
CAPTION_PX, LABEL_PX, TITLE_PX, PAD_PX = 48, 110, 46, 8
#: Narrower pictures are widened (on the right) so that the caption fits.
MIN_WIDTH_PX = 720
#: Cell height for images up to :data:`SMALL_IMAGE_PX` tall, and above.
SMALL_CELL_PX, LARGE_CELL_PX, SMALL_IMAGE_PX = 160, 300, 96
FONT_PX, CAPTION_FONT_PX = 11, 12
TINT_COLOUR = (40, 80, 200)
GRID_COLOUR = (255, 255, 255)


class Box(NamedTuple):
    """A pixel-edge box ``(x1, y1, x2, y2)`` (covers columns ``x1..x2-1``)
    of an image, its RGB colour and an optional label."""
    xyxy: Sequence[float]
    colour: Tuple[int, int, int]
    text: Optional[str] = None


class Cell(NamedTuple):
    """One image of a row: RGB uint8 (3, h, w), its title, its boxes and
    the cells of a ``grid x grid`` mixing grid to outline (0: none)."""
    image: Tensor
    title: str = ''
    boxes: Sequence[Box] = ()
    grid: int = 0


#: ``[(row label, cells), ...]``.
Rows = List[Tuple[str, List[Cell]]]


def tint_outside(image: Union[Tensor, np.ndarray],
                 mask: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
    """Tint the pixels outside a mask blue (R-Mix's unselected cells).

    Args:
        image (Tensor | np.ndarray): RGB uint8 image, a (3, H, W) tensor or
            an (H, W, 3) array.
        mask (Tensor | np.ndarray): Bool mask with H x W elements.

    Returns:
        Tensor | np.ndarray: A new uint8 image of the input's kind,
        unchanged inside the mask and ``0.35 * pixel + 0.65 * (40, 80,
        200)`` outside (``draw_segmentation_masks`` with alpha 0.65).
    """
    from torchvision.utils import draw_segmentation_masks
    array = isinstance(image, np.ndarray)
    img = torch.from_numpy(image).permute(2, 0, 1) if array else image
    mask = torch.as_tensor(mask) if isinstance(mask, np.ndarray) else mask
    outside = ~mask.detach().cpu().bool().reshape(img.shape[-2:])
    out = draw_segmentation_masks(img, outside, 0.65, TINT_COLOUR)
    return out.permute(1, 2, 0).numpy() if array else out


def colour_palette(n: int) -> Tensor:
    """``n`` distinct RGB colours (golden-ratio hues), uint8 (n, 3)."""
    out = torch.zeros(n, 3, dtype=torch.uint8)
    for i in range(n):
        s, v = (0.85, 0.95) if i % 2 == 0 else (0.6, 0.8)
        rgb = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, s, v)
        out[i] = torch.tensor([round(255 * c) for c in rgb])
    return out


@functools.lru_cache(maxsize=None)
def _font_path() -> Optional[str]:
    """matplotlib's DejaVu Sans, or None (PIL's default font)."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = osp.join(matplotlib.get_data_path(), 'fonts', 'ttf',
                    'DejaVuSans.ttf')
    return path if osp.isfile(path) else None


@functools.lru_cache(maxsize=None)
def _font(size: int) -> Any:
    from PIL import ImageFont
    path = _font_path()
    return (ImageFont.truetype(path, size)
            if path else ImageFont.load_default(size))


def _wrap(text: str, font: Any, width: int) -> str:
    """Break ``text`` at spaces into lines at most ``width`` px long."""
    lines: List[str] = []
    for para in text.split('\n'):
        line = ''
        for word in para.split(' '):
            trial = f'{line} {word}' if line else word
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return '\n'.join(lines)


def text_tile(text: str,
              height: int,
              width: int,
              size: int = FONT_PX,
              top: Optional[int] = None) -> Tensor:
    """Black ``text`` on white, (3, height, width) uint8, wrapped to the
    width; it starts ``top`` pixels down, or ends 3 pixels above the bottom
    when ``top`` is None."""
    from PIL import Image, ImageDraw
    font = _font(size)
    img = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    text = _wrap(text, font, width - 6)
    if top is None:
        bottom = draw.multiline_textbbox((0, 0), text, font, spacing=2)[3]
        top = max(height - bottom - 3, 0)
    draw.multiline_text((3, top), text, (0, 0, 0), font, spacing=2)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _draw_boxes(image: Tensor, boxes: Sequence[Box],
                scale: Tuple[float, float], width: int) -> Tensor:
    """Boxes of the original image, drawn on it resized by ``scale = (sx,
    sy)``."""
    from torchvision.utils import draw_bounding_boxes
    if not boxes:
        return image
    sx, sy = scale
    xyxy = torch.tensor([[float(v) for v in b.xyxy] for b in boxes])
    xyxy = xyxy * torch.tensor([sx, sy, sx, sy])
    xyxy[:, 2:] = torch.maximum(xyxy[:, 2:] - 1, xyxy[:, :2])
    path = _font_path()
    return draw_bounding_boxes(image,
                               xyxy,
                               labels=[b.text for b in boxes],
                               colors=[b.colour for b in boxes],
                               width=width,
                               font=path,
                               font_size=FONT_PX if path else None,
                               fill_labels=True)


def cell_size(height: int, width: int) -> Tuple[int, int]:
    """(height, width) in pixels of the cell for an image size:
    :data:`SMALL_CELL_PX` tall for images up to :data:`SMALL_IMAGE_PX`
    pixels tall, :data:`LARGE_CELL_PX` above; the width follows the aspect
    ratio, clipped to [0.5, 2] x the height."""
    cell_h = SMALL_CELL_PX if height <= SMALL_IMAGE_PX else LARGE_CELL_PX
    ratio = min(max(width / max(height, 1), 0.5), 2.0)
    return cell_h, int(round(cell_h * ratio))


def figure_size(num_rows: int, num_cols: int,
                cell: Tuple[int, int]) -> Tuple[int, int]:
    """(height, width) in pixels of a picture: ``CAPTION_PX + PAD_PX + rows
    * (TITLE_PX + cell_h + PAD_PX)`` by ``max(LABEL_PX + PAD_PX + cols *
    (cell_w + PAD_PX), MIN_WIDTH_PX)``."""
    cell_h, cell_w = cell
    return (CAPTION_PX + PAD_PX + num_rows * (TITLE_PX + cell_h + PAD_PX),
            max(LABEL_PX + PAD_PX + num_cols * (cell_w + PAD_PX),
                MIN_WIDTH_PX))


def _tile(cell: Cell, size: Tuple[int, int], smooth: bool) -> Tensor:
    """A cell's title band over its image, resized into ``size`` (aspect
    kept; nearest for small images), with its grid lines and boxes."""
    h, w = cell.image.shape[-2:]
    scale = min(size[0] / h, size[1] / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = cell.image[None].float()
    x = (F.interpolate(x, (nh, nw), mode='bilinear', antialias=True)
         if smooth else F.interpolate(x, (nh, nw), mode='nearest'))
    x = x[0].round().clamp(0, 255).to(torch.uint8)
    sxy, g = (nw / w, nh / h), cell.grid
    lines = [
        Box((c * w / g, r * h / g, (c + 1) * w / g,
             (r + 1) * h / g), GRID_COLOUR) for r in range(g) for c in range(g)
    ] if g > 1 else []
    x = _draw_boxes(_draw_boxes(x, lines, sxy, 1), cell.boxes, sxy, 2)
    out = torch.full((3, size[0], size[1]), 255, dtype=torch.uint8)
    out[:, :nh, :nw] = x
    return torch.cat([text_tile(cell.title, TITLE_PX, size[1]), out], 1)


def draw_rows(rows: Rows, caption: str) -> np.ndarray:
    """Draw ``rows`` under ``caption``.

    Args:
        rows (Rows): ``(label, cells)`` per row; the cell size follows the
            first image (:func:`cell_size`).
        caption (str): Text of the caption band (wrapped).

    Returns:
        np.ndarray: RGB uint8 (H, W, 3) of :func:`figure_size`.
    """
    from torchvision.utils import make_grid
    num_cols = max(len(cells) for _, cells in rows)
    h0, w0 = rows[0][1][0].image.shape[-2:]
    size = cell_size(h0, w0)
    smooth = max(h0, w0) > SMALL_IMAGE_PX
    blank = torch.full((3, TITLE_PX + size[0], size[1]),
                       255,
                       dtype=torch.uint8)
    tiles = []
    for _, cells in rows:
        tiles += [_tile(c, size, smooth) for c in cells]
        tiles += [blank] * (num_cols - len(cells))
    grid = make_grid(torch.stack(tiles), num_cols, PAD_PX, pad_value=255)
    labels = [torch.full((3, PAD_PX, LABEL_PX), 255, dtype=torch.uint8)]
    labels += [
        text_tile(label, blank.shape[1] + PAD_PX, LABEL_PX, top=TITLE_PX)
        for label, _ in rows
    ]
    body = torch.cat([torch.cat(labels, 1), grid], 2)
    width = max(body.shape[2], MIN_WIDTH_PX)
    body = F.pad(body, (0, width - body.shape[2]), value=255)
    top = text_tile(caption, CAPTION_PX, width, CAPTION_FONT_PX, top=4)
    return torch.cat([top, body], 1).permute(1, 2, 0).contiguous().numpy()
