"""labelfleet's student as a one-score reranker: a BERT cross-encoder whose score is the expected
grade (sum of grade x probability over its grade head). Written by `labelfleet export-reranker`;
loaded with `trust_remote_code=True`."""

import torch
from torch import nn
from transformers import BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class LabelfleetExpectedGrade(BertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = 1
        self.bert = BertModel(config)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.labelfleet_num_grades)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        logits = self.classifier(self.dropout(out.pooler_output))
        probs = logits.float().softmax(dim=-1)
        grades = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        score = (probs * grades).sum(dim=-1, keepdim=True)
        return SequenceClassifierOutput(logits=score.to(logits.dtype))
